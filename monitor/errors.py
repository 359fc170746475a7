"""Errors slat-monitor raises to its callers (never into the training loop)."""

from __future__ import annotations

__all__ = ["ConfigError", "RecordError", "SlatMonitorError", "SourceError"]


class SlatMonitorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SlatMonitorError, ValueError):
    """A bad argument to `watch()` or a command: the message names the argument and what was expected."""


class RecordError(SlatMonitorError, ValueError):
    """A path that is missing or is not a slat-monitor run record."""


class SourceError(SlatMonitorError, ConnectionError):
    """A diagnosis source that cannot be read (e.g. an unreachable Prometheus)."""
