"""File-based service discovery: a watched run announces its /metrics endpoint to Prometheus.

Prometheus (`file_sd_configs`, see monitor/ops/configs.py) watches a folder of JSON files; each file
lists targets with labels. `register()` writes one file per process atomically (temp file + rename, so
Prometheus never reads half a file), mode 0644 so a Prometheus running as another user can read it, and
`TargetRegistration.remove()` deletes it - on close, and on SIGTERM (monitor/ops/sigterm.py, chained to
the previous handler). A run that crashes or is SIGKILLed leaves its file behind, so Prometheus keeps
trying, `up` drops to 0 and SlatmonTargetDown fires: that is the intended signal.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .sigterm import forget, remove_on_sigterm

__all__ = ["TargetRegistration", "register", "target_document"]


def target_document(host: str, port: int, run: str, rank: int | str) -> list[dict[str, object]]:
    """The file_sd JSON document for one endpoint: `[{"targets": ["host:port"], "labels": {...}}]`."""
    return [{"targets": [f"{host}:{port}"], "labels": {"run": str(run), "rank": str(rank)}}]


class TargetRegistration:
    """Handle of a registered target file; `remove()` is idempotent, and it works as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        forget(self.path)

    def __enter__(self) -> TargetRegistration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def register(targets_dir: str | os.PathLike[str], host: str, port: int, run: str,
             rank: int | str = 0) -> TargetRegistration:
    """Write `<targets_dir>/<run>-<rank>-<pid>.json` announcing host:port with labels run and rank.

    The folder is created when missing. The file name is made of safe characters only; the labels keep
    the exact run name."""
    folder = Path(targets_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{run}-{rank}-{os.getpid()}")
    path = folder / f"{stem}.json"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(target_document(host, port, run, rank), out)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: unreadable by a Prometheus running as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_on_sigterm(path)
    return TargetRegistration(path)
