"""The watcher `watch()` returns when SLATMON_DISABLE=1: Watcher's whole public surface, no hooks.

The arguments are checked as `watch()` checks them (a script that runs disabled runs enabled too), the
run is named and described (`run`, `rank`, `info`, `layers`), and then nothing is hooked, served or
recorded: `counters` stay at 0, `findings()` is empty, `url` and `record_path` are None.
tests/adversarial/test_disabled_surface.py keeps this class's public attributes and signatures equal to
Watcher's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import DEFAULT_PORT, check_watch, default_run
from .distributed import detect
from .findings import Finding
from .history import History, RunInfo
from .layers import LayerMap
from .preflight import describe
from .scaling import scaler_kind
from .snapshot import Counters, Snapshot
from .tracker import Tracker

__all__ = ["DisabledWatcher"]


class DisabledWatcher:
    """Returned by `watch()` under SLATMON_DISABLE=1: every Watcher method and attribute, doing nothing."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, scaler: Any = None,
                 loss_scale: Callable[[], float] | None = None, every: int = 1, run: str | None = None,
                 rank: int | None = None, port: int | None = DEFAULT_PORT, host: str = "127.0.0.1",
                 record: str | os.PathLike[str] | None = None, max_layers: int = 512,
                 group_depth: int | None = None, update_ratio: bool = True,
                 targets_dir: str | os.PathLike[str] | None = None, export_layers: str = "auto",
                 on_nonfinite: str = "warn", max_skips: int | None = None,
                 checkpoint: Callable[[dict[str, Any]], Any] | None = None, step_pre_hook: bool = True,
                 save_bad_batch: bool = False, trainer: str = "") -> None:
        check_watch(model, optimizer, dict(
            scaler=scaler, loss_scale=loss_scale, every=every, run=run, rank=rank, port=port, host=host,
            record=record, max_layers=max_layers, group_depth=group_depth, update_ratio=update_ratio,
            targets_dir=targets_dir, export_layers=export_layers, on_nonfinite=on_nonfinite, max_skips=max_skips,
            checkpoint=checkpoint, step_pre_hook=step_pre_hook, save_bad_batch=save_bad_batch, trainer=trainer))
        self.model, self.optimizer, self.every = model, optimizer, every
        self.dist = detect(rank)
        self.run = default_run(run, run_id=self.dist.run_id, world_size=self.dist.world_size)
        self.rank = self.dist.rank
        self.url: str | None = None
        self.record_path: str | None = None  # nothing is recorded
        self.counters = Counters()
        self.layers = LayerMap.build(model, max_layers, group_depth)
        self.info: RunInfo = describe(model, optimizer, self.layers, scaler_kind=scaler_kind(scaler, loss_scale),
                                      run=self.run, rank=self.rank, every=every)
        self.preflight: list[Finding] = []
        self.tracker = Tracker(run=self.run, rank=self.rank, every=every, counters=self.counters, model=model,
                               record=None, guard=lambda fn: fn)  # never fed, never armed: holds no hook

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Does nothing (SLATMON_DISABLE=1)."""

    def step_skipped(self, loss: torch.Tensor | float | None = None) -> None:
        """Does nothing (SLATMON_DISABLE=1)."""

    def before_optimizer_step(self) -> None:
        """Does nothing (SLATMON_DISABLE=1)."""

    def history(self) -> History:
        """The set-up only: nothing was observed."""
        return History(run=self.info)

    def findings(self) -> list[Finding]:
        """Always empty: nothing was observed or diagnosed."""
        return []

    @property
    def snapshot(self) -> Snapshot:
        return self.tracker.snapshot

    def close(self) -> None:
        """Nothing to remove. Idempotent."""

    def __enter__(self) -> DisabledWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Watcher run={self.run!r} rank={self.rank} disabled (SLATMON_DISABLE=1)>"
