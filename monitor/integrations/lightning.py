"""`SlatMonitorCallback`: watch a PyTorch Lightning run in one line (extra `lightning`).

    from monitor.integrations.lightning import SlatMonitorCallback
    trainer = L.Trainer(..., callbacks=[SlatMonitorCallback(record="runs/pl-{rank}.db")])

At `on_train_start` it watches the LightningModule (its children when the module has no `forward` of
its own, so that the layers the training step calls are hooked) and `trainer.optimizers[optimizer]`.
The loss scale is read from the precision plugin: `trainer.precision_plugin.scaler` (a GradScaler
under `precision="16-mixed"`; None under bf16 and 32-bit, where the scale is 1).

Where the step is seen: with a GradScaler Lightning runs forward/backward first, unscales, then calls
`scaler.step(optimizer)`: the optimizer's own step hooks see it, and the scaler's skipped steps are
counted at `scaler.update()`. Without one, Lightning calls `optimizer.step(closure)` and the forward
and backward run inside it, after the optimizer's pre-hook: the watcher is then made with
`step_pre_hook=False` and told at `on_before_optimizer_step`, which Lightning calls after the closure's
backward, before the update (and before Lightning's own gradient clipping, which runs next inside
the same closure: with `gradient_clip_val` and no GradScaler, the `grad_norm_applied` recorded is
the norm before clipping; the per-layer and global norms are always before clipping). A
`training_step` that returns None (Lightning then skips the backward) is recorded as a skipped
step. The loss comes from `on_before_backward` (the GradScaler's
scale and the division by `accumulate_grad_batches` undone, so the step's loss is the mean of the
training_step losses).

Findings go to the trainer's loggers (`slatmon/findings_critical`, `slatmon/findings_warning`,
`slatmon/skipped_steps`, `slatmon/finding/<code>` = its first step) at the end of each training
epoch and of training, and critical ones to the `monitor` Python logger. The watcher is closed (every
hook removed) at the end of training, on an exception (`on_exception`) and at `teardown`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..config import check_option_names
from ..errors import ConfigError
from ..findings import Finding
from ..watcher import WATCH_OPTIONS, Watcher, watch

__all__ = ["SlatMonitorCallback"]

log = logging.getLogger("monitor")

_TAKEN = ("scaler", "loss_scale", "step_pre_hook")  # options the callback takes from the trainer


def _watched_module(module: pl.LightningModule) -> nn.Module:
    """The module itself when it defines `forward`; else its children in a container (whose own
    forward never runs, so the watcher hooks the children)."""
    if type(module).forward is not pl.LightningModule.forward:
        return module
    return nn.ModuleDict(dict(module.named_children()))


def findings_metrics(findings: list[Finding], skipped_steps: int) -> dict[str, float]:
    """Numbers a Lightning logger accepts: counts per severity, each finding's first step."""
    metrics = {"slatmon/findings_critical": float(sum(f.severity == "critical" for f in findings)),
               "slatmon/findings_warning": float(sum(f.severity == "warning" for f in findings)),
               "slatmon/skipped_steps": float(skipped_steps)}
    for f in findings:
        metrics[f"slatmon/finding/{f.code}"] = float(f.first_step if f.first_step is not None else -1)
    return metrics


class SlatMonitorCallback(pl.Callback):
    """`watch_options`: any `monitor.watch()` option but `scaler`, `loss_scale`, `step_pre_hook`
    (taken from the trainer). `optimizer`: the index in `trainer.optimizers` to watch (one per callback).
    `watcher` is the live Watcher while training; `last_watcher` stays after it closed."""

    def __init__(self, optimizer: int = 0, **watch_options: Any) -> None:
        for arg in _TAKEN:
            if arg in watch_options:
                raise ConfigError(f"SlatMonitorCallback(): {arg}= is taken from the Lightning trainer; do not pass it")
        check_option_names(watch_options, [o for o in WATCH_OPTIONS if o not in _TAKEN], "SlatMonitorCallback()")
        if isinstance(optimizer, bool) or not isinstance(optimizer, int) or optimizer < 0:
            raise ConfigError(f"SlatMonitorCallback(): optimizer must be an index into trainer.optimizers, got "
                              f"{optimizer!r}")
        self.optimizer_index = optimizer
        self.watch_options = watch_options
        self.watcher: Watcher | None = None  # while training
        self.last_watcher: Watcher | None = None  # the latest, also after close(): findings(), history()
        self._optimizer: torch.optim.Optimizer | None = None
        self._external_step = False
        self._loss_factor = 1
        self._backward_seen = False  # a backward ran since the last update
        self._scaler: Any = None

    # -- attach / detach -----------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()  # a previous fit's watcher, if any
        if self.optimizer_index >= len(trainer.optimizers):
            raise ConfigError(f"SlatMonitorCallback(): optimizer={self.optimizer_index} but the trainer has "
                              f"{len(trainer.optimizers)} optimizer(s)")
        self._optimizer = trainer.optimizers[self.optimizer_index]
        scaler = self._scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._external_step = scaler is None  # optimizer.step(closure): backward runs after the pre-hook
        self._loss_factor = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        self.watcher = self.last_watcher = watch(_watched_module(pl_module), self._optimizer, scaler=scaler,
                                                 step_pre_hook=not self._external_step, **self.watch_options)

    def close(self) -> None:
        """Close the watcher (hooks removed, record flushed). Idempotent."""
        w, self.watcher = self.watcher, None
        if w is not None:
            w.close()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_findings(trainer)
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.close()

    # -- the iteration ---------------------------------------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._backward_seen = True
        w = self.watcher
        if isinstance(w, Watcher):  # (not SLATMON_DISABLE's stand-in) errors counted by the watcher, never raised
            w._run_guarded(lambda: w.observe_loss(self._unscaled(loss)))

    def _unscaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The training_step's loss: Lightning hands this hook the loss already multiplied by the GradScaler's
        scale (a power of two: dividing is exact; the scale is read on the device, no sync) and divided
        by accumulate_grad_batches."""
        scale = getattr(self._scaler, "_scale", None) if self._scaler is not None else None
        if isinstance(scale, torch.Tensor):
            loss = loss.detach() / scale.to(loss.device)
        return loss.detach() * self._loss_factor if self._loss_factor != 1 else loss

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.watcher is None or optimizer is not self._optimizer:
            return
        backward, self._backward_seen = self._backward_seen, False
        if not backward and pl_module.automatic_optimization:
            # training_step returned None: Lightning skips the backward and (with a GradScaler) the
            # update; without one it calls step() with no gradients. Either way: a skipped step.
            self.watcher.step_skipped()
        elif self._external_step:
            self.watcher.before_optimizer_step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_findings(trainer)

    def _log_findings(self, trainer: pl.Trainer) -> None:
        w = self.watcher
        if isinstance(w, Watcher):  # (not closed, not SLATMON_DISABLE=1) an error is counted, never raised
            w._run_guarded(self._log, trainer, w)

    def _log(self, trainer: pl.Trainer, w: Watcher) -> None:
        findings = w.findings()
        metrics = findings_metrics(findings, w.counters.skipped_steps)
        for logger in trainer.loggers:
            try:
                logger.log_metrics(metrics, step=trainer.global_step)
            except Exception as exc:  # a logger's trouble is not the training's
                log.warning("slat-monitor: could not log findings to %s: %s", type(logger).__name__, exc)
        for f in findings:
            if f.severity == "critical":
                log.warning("slat-monitor: critical finding %s at step %s: %s", f.code, f.first_step, f.title)
