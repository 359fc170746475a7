"""Small real watched runs for the CLI and source tests: see tests/models.py."""

from tests.models import Fp16Blocks, watched_run

__all__ = ["Fp16Blocks", "watched_run"]
