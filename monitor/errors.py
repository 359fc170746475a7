"""Errors slat-monitor raises to its callers (never into the training loop)."""

from __future__ import annotations

__all__ = ["ConfigError", "GuardStop", "RecordError", "SlatMonitorError", "SourceError"]


class SlatMonitorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SlatMonitorError, ValueError):
    """A bad argument to `watch()` or a command: the message names the argument and what was expected."""


class RecordError(SlatMonitorError, ValueError):
    """A path that is missing or is not a slat-monitor run record."""


class SourceError(SlatMonitorError, ConnectionError):
    """A diagnosis source that cannot be read (e.g. an unreachable Prometheus)."""


class GuardStop(SlatMonitorError, RuntimeError):
    """Raised out of `optimizer.step()` by `watch(..., on_nonfinite="stop")`, or by "skip" after
    `max_skips` consecutive skips: the one exception the monitor raises into the training loop on purpose.

    When it is raised the parameters and optimizer state hold their values from before the failing step
    (nothing non-finite was applied), the run record is flushed, and `checkpoint=` (if given) was called.
    `step`: the watcher's step number of the failing step; `reason`: "nonfinite_grad" (gradients not
    finite) or "nonfinite_update" (finite gradients, the update made parameters or optimizer state
    non-finite); `finding`: the code of the finding the message names, or None.
    """

    def __init__(self, message: str, *, step: int, reason: str, finding: str | None = None) -> None:
        super().__init__(message)
        self.step, self.reason, self.finding = step, reason, finding
