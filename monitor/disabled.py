"""The Watcher returned when SLATMON_DISABLE=1: same surface, no hooks, records nothing."""

from __future__ import annotations

from typing import Any

from .findings import Finding
from .history import History

__all__ = ["DisabledWatcher"]


class DisabledWatcher:
    url = None
    record_path = None

    def __init__(self, model: Any, optimizer: Any) -> None:
        self.model, self.optimizer = model, optimizer

    def observe_loss(self, loss: Any) -> None:
        pass

    def step_skipped(self, loss: Any = None) -> None:
        pass

    def before_optimizer_step(self) -> None:
        pass

    def findings(self) -> list[Finding]:
        return []

    def history(self) -> History:
        return History()

    def close(self) -> None:
        pass

    def __enter__(self) -> DisabledWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
