"""`ErrorGuard`: how the monitor never breaks training. Every place our code runs in the user's process
(hook bodies, callbacks, `close()` steps, the integrations' wrappers) goes through `run()` or `wrap()`:
timed into `Counters.monitor_seconds`, and any exception counted (`Counters.errors`, exported in
`slatmon_monitor_errors_total`), logged once (logger "monitor") and swallowed."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from .snapshot import Counters

__all__ = ["ErrorGuard", "guarded_method"]

log = logging.getLogger("monitor")


def guarded_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hook body wrapper (methods of an object with `_run_guarded`): time it, and count/log/swallow any
    exception."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        self._run_guarded(fn, self, *args, **kwargs)

    return wrapper


class ErrorGuard:
    """One watcher's guard; its counts go to `counters`. Used from the training thread."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._logged = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., None]:
        """`fn` timed, with any exception counted, logged once and swallowed (never raised into training)."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> None:
            self.run(fn, *args, **kwargs)

        return guarded

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """`fn(*args, **kwargs)` timed, with any exception counted, logged once and swallowed."""
        t0 = time.perf_counter()
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # never raise into the training loop
            self.error(exc)
        finally:
            self._counters.monitor_seconds += time.perf_counter() - t0

    def error(self, exc: BaseException) -> None:
        """Count `exc`; the first one is logged with its traceback."""
        self._counters.errors += 1
        if self._logged == 0:
            log.exception("slat-monitor: error inside the monitor (training continues; further errors are "
                          "counted in slatmon_monitor_errors_total): %s", exc)
        self._logged += 1
