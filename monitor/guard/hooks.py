"""The guard's optimizer step hooks on behalf of a `Watcher`.

Registered between the watcher's own hooks (`register()`): its pre-hook after the watcher's (the
step number is advanced and a sample begun), its post-hook before the watcher's (a skipped step's
sample is finished, marked skipped, before the undo). Errors are counted and swallowed like the
watcher's; `GuardStop` is the one exception let through, after it is recorded and the record flushed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch.utils.hooks import RemovableHandle

from ..errors import GuardStop
from .policy import Guard

# The Watcher these hooks serve (typed Any: attach.py imports this module, and the package keeps its
# imports acyclic, type-only ones included). It provides model, optimizer, info, counters, tracker,
# findings(), _sampler, _guard_skipped() and _error().
Watcher = Any

__all__ = ["GuardHooks"]


class GuardHooks:
    def __init__(self, watcher: Watcher, mode: str, max_skips: int | None,
                 checkpoint: Callable[[dict[str, Any]], Any] | None) -> None:
        self._w = watcher
        self.seconds = 0.0  # time spent in the guard's hooks (also in the watcher's monitor_seconds)
        self.guard = Guard(watcher.model, watcher.optimizer, mode=mode, max_skips=max_skips,
                           checkpoint=checkpoint, grad_scaler=watcher.info.scaler == "grad_scaler",
                           on_skip=watcher._guard_skipped, findings=watcher.findings)

    def register(self) -> list[RemovableHandle]:
        """The pre-hook and the post-hook; the caller places them between its own (see module doc)."""
        opt = self._w.optimizer
        return [opt.register_step_pre_hook(self._pre), opt.register_step_post_hook(self._post)]

    def remove(self) -> None:
        """Give back anything lent out by a step that raised; record a verdict still pending."""
        self._run(self.guard.remove)

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._run(self._before)

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._run(self.guard.after_step)

    def _before(self) -> None:
        self.guard.resolve()  # a verdict the previous step left on the device
        self.guard.before_step(self._w.counters.step, sampled=self._w._sampler.pending)

    def _run(self, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        except GuardStop as stop:  # the one deliberate exception: on_nonfinite="stop" / max_skips
            try:
                self._w.tracker.guard_stopped(stop.step, stop.reason, stop.finding, str(stop))
            except Exception as exc:  # recording it failed: GuardStop still leaves, not this error
                self._w._error(exc)
            raise
        except Exception as exc:  # never raise anything else into the training loop
            self._w._error(exc)
        finally:
            spent = time.perf_counter() - t0
            self.seconds += spent
            self._w.counters.monitor_seconds += spent
