"""Remove files on SIGTERM, then let the signal do what it did before (chained, never swallowed).

torchrun stops the surviving workers of a failed job with SIGTERM, and schedulers (SLURM, Kubernetes)
do the same before SIGKILL. Python's default SIGTERM action kills the process without running any
cleanup, which would leave a target file behind: Prometheus would keep scraping a dead endpoint and
SlatmonTargetDown would fire for a rank that was stopped on purpose.

`remove_on_sigterm(path)` installs one process-wide handler (only from the main thread: Python allows
signal handlers nowhere else) unless it is installed already, remembering the handler it replaces, and
puts that one back when the last path is released - unless someone installed their own handler after
ours, which is then left alone (and chained to by the next registration).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["forget", "remove_on_sigterm"]

log = logging.getLogger("monitor")

_paths: set[Path] = set()
_previous: Any = None
_lock = threading.Lock()


def _handler(signum: int, frame: FrameType | None) -> None:
    for path in list(_paths):
        try:
            path.unlink(missing_ok=True)
        except Exception as exc:  # never raised out of a signal handler: the signal goes on as before
            log.warning("slat-monitor: could not remove %s on SIGTERM: %s", path, exc)
    _paths.clear()
    previous = _previous
    try:
        _uninstall()
    except Exception as exc:
        log.warning("slat-monitor: could not put the previous SIGTERM handler back: %s", exc)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or None: set from C): die of the signal as we would have without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _uninstall() -> None:
    global _previous
    if signal.getsignal(signal.SIGTERM) is _handler:
        signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    _previous = None


def remove_on_sigterm(path: Path) -> bool:
    """Delete `path` if SIGTERM arrives; returns False when no handler could be installed (not the main
    thread): the file is then only removed by `forget`'s caller on a clean exit."""
    global _previous
    with _lock:
        if signal.getsignal(signal.SIGTERM) is not _handler:
            if threading.current_thread() is not threading.main_thread():
                log.info("slat-monitor: not in the main thread; %s is not removed on SIGTERM", path)
                return False
            _previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _handler)
        _paths.add(path)
        return True


def forget(path: Path) -> None:
    """Stop watching `path`; the last one puts the previous SIGTERM handler back (from the main thread)."""
    with _lock:
        _paths.discard(path)
        if not _paths and threading.current_thread() is threading.main_thread():
            _uninstall()
