"""`Watcher`: the live watcher `watch()` returns (monitor/watcher.py documents its hooks, syncs and threads).

It composes the step book (`stepbook.py`: step numbers, the iteration under way, skipped steps; the
loss scale read through `scale_reads.py`), the sampled steps (`sampled_steps.py`), the hooks put on and
taken off (`attach.py`) and the tracker; it describes and lints the set-up, and runs every hook body
through `_run_guarded` (`guarded.py`: timed, any exception counted, logged once and swallowed).
`disabled.py`'s DisabledWatcher keeps the same public surface.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .attach import attach, removals
from .config import DEFAULT_PORT, check_watch, default_run
from .distributed import detect, record_path
from .findings import Finding
from .guarded import ErrorGuard, guarded_method
from .history import History, RunInfo
from .inputs import InputProbe
from .layers import LayerMap
from .paramwatch import ParamWatch
from .preflight import describe, lint, log_critical, typical_abs
from .sampled_steps import SampledSteps
from .sampler import StepSampler
from .scale_reads import ScaleReads
from .scaling import scaler_kind
from .snapshot import Counters, Snapshot
from .stepbook import StepBook
from .tracker import Tracker

__all__ = ["Watcher"]


class Watcher:
    """Returned by `watch()`. Use as a context manager or call `close()`."""

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
        self._export_layers = export_layers
        self.model, self.optimizer, self.every = model, optimizer, every
        self.dist = detect(rank)  # rank, local rank, world size, torchrun run id (no collective)
        self.run = default_run(run, run_id=self.dist.run_id, world_size=self.dist.world_size)
        self.rank = self.dist.rank
        self.record_path = record_path(record, self.dist)  # one file per rank in a multi-process job
        self.counters = Counters()
        self._closed = False
        errors = ErrorGuard(self.counters)  # used by the integrations, GuardHooks, the tracker and the probes too
        self._run_guarded, self._guard, self._error = errors.run, errors.wrap, errors.error
        self._scales = ScaleReads(self.counters)  # its taps are set by attach()
        self._steps = StepBook(self, self._scales)
        self._samples = SampledSteps(self)
        self._build(scaler, loss_scale, max_layers, group_depth, update_ratio, trainer)
        try:
            attach(self, scaler, loss_scale, on_nonfinite, max_skips, checkpoint, step_pre_hook, port, host,
                   targets_dir, save_bad_batch)
        except BaseException:
            self.close()  # whatever was hooked before the failure (a busy port, ...) is removed again
            self.tracker.discard_record()  # nothing was recorded yet: leave no empty file behind
            raise

    def _build(self, scaler: Any, loss_scale: Callable[[], float] | None, max_layers: int,
               group_depth: int | None, update_ratio: bool, trainer: str) -> None:
        """Everything before the hooks: the layer map and sampler, the set-up described and linted, the
        tracker (it may refuse the record path: before anything is hooked), the hooks' places empty."""
        self._autocast: str | None = None
        self._device_type = next((p.device.type for p in self.model.parameters()), "cpu")
        self._layer_options = (max_layers, group_depth, update_ratio)
        self.layers = LayerMap.build(self.model, max_layers, group_depth)
        self._sampler = StepSampler(self.layers, self.optimizer, update_ratio)
        self._params = ParamWatch(self.model, self.optimizer)  # parameters swapped or added later: checked on samples
        self._kind = scaler_kind(scaler, loss_scale)
        self._typical: dict[str, float] = {}  # measured once: the weights' resolution the lr is linted against
        self._run_guarded(lambda: self._typical.update(typical_abs(self.layers)))
        if self._kind in ("none", "disabled"):
            self.counters.loss_scale = 1.0
        self._trainer = trainer
        self.info: RunInfo = self._describe()
        self.preflight = lint(self.info)
        log_critical(self.preflight)  # "before the first step": said once, when watching starts
        self.tracker = Tracker(run=self.run, rank=self.rank, every=self.every, counters=self.counters,
                               model=self.model, record=self.record_path, guard=self._guard)
        self.tracker.start_run(self.info, self.preflight)
        self._handles: list[Any] = []
        self._nonfinite_guard = self._output = self._server = self._target = None
        self._inputs: InputProbe | None = None
        self.url: str | None = None

    # -- public -----------------------------------------------------------------------------
    @guarded_method
    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Remember a loss of this iteration (a reference; read on sampled and skipped steps only, no
        sync here). Call it for every micro-batch: the step's loss is their mean, NaN if any is."""
        if not self._closed:
            self._steps.observe(loss)

    @guarded_method
    def step_skipped(self, loss: torch.Tensor | float | None = None) -> None:
        """Record that the training loop skipped this iteration's optimizer step by itself.

        Needed only where no hook can see the skip: a loop that checks its gradients and does not call
        `optimizer.step()`, with neither `scaler=` nor `loss_scale=` (TRELLIS `fp16_mode=None`,
        bf16 AMP without a scaler). Skips that the GradScaler or a falling `loss_scale` show are
        counted already: a second report for the same iteration is ignored. `loss`: optional, as for
        `observe_loss`. Call it after lowering a hand-made loss scale, not before."""
        if self._closed:
            return
        if loss is not None:
            self.observe_loss(loss)
        self._scales.dropped()  # a drop the loop made for this very skip is not a second one
        if not self._steps.iteration_open and self._steps.last_was_skip:
            return
        self._steps.skipped("user")

    def before_optimizer_step(self) -> None:
        """The iteration's gradients are final and the update is about to run: what the optimizer's step
        pre-hook does, for a watcher made with `step_pre_hook=False`.

        For loops that run forward and backward inside `optimizer.step(closure)` (Lightning without a
        GradScaler), where the pre-hook fires before the gradients exist. Call it once per update,
        after the closure's backward and before the parameters change."""
        if not self._closed:
            self._pre_step(self.optimizer, (), {})

    def history(self) -> History:
        """Everything observed so far (bounded in memory; the run record keeps it all)."""
        return self.tracker.history(self.info, self.preflight)

    def findings(self) -> list[Finding]:
        """The newest diagnosis: pre-flight findings and every rule over the history, ranked.
        Call it from the training thread (it may complete a pending sample on the device)."""
        self._finish_guarded()
        self._run_guarded(self._flush_inputs)  # a bad batch on a step not sampled yet
        return self.tracker.findings(self.info, self.preflight)

    @property
    def snapshot(self) -> Snapshot:
        return self.tracker.snapshot

    def close(self) -> None:
        """Remove every hook, stop the endpoint, flush the record. Idempotent. Each removal runs on its
        own: one that fails is counted and logged, and the others still run."""
        if self._closed:
            return
        self._finish_guarded()
        self._run_guarded(self._steps.check_scale_drop)  # the last iteration's skip shows only at the next forward
        self._run_guarded(self._flush_inputs)
        self._closed = True
        for part in removals(self):
            self._run_guarded(part)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"step {self.counters.step}"
        return f"<Watcher run={self.run!r} rank={self.rank} {state} url={self.url}>"

    # -- hooks ------------------------------------------------------------------------------
    @guarded_method
    def _finish_guarded(self) -> None:
        self._samples.finish()

    def _flush_inputs(self) -> None:
        if self._inputs is not None:
            self.tracker.add_events(self._inputs.flush())

    @guarded_method
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._samples.finish()  # a deferred (master-copy) sample whose forward never came
        self._steps.check_scale_drop()
        step = self._steps.begin_step(optimizer)
        if step is None:
            return  # the fused kernel skips this update; the skip is counted
        if self.tracker.should_sample(step):
            self._samples.begin(step, optimizer)
        else:
            self._output.take()
            self._sampler.discard_capture()

    @guarded_method
    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._sampler.pending and not self._sampler.master:
            self._samples.finish()

    def _guard_skipped(self, step: int, reason: str) -> None:
        """The guard's callback (GuardHooks): it kept `step` out of the weights (`StepBook.guard_skipped`)."""
        self._steps.guard_skipped(step, reason)

    @guarded_method
    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        self._samples.finish()
        if self._autocast is None and torch.is_autocast_enabled(self._device_type):
            self._autocast = str(torch.get_autocast_dtype(self._device_type)).removeprefix("torch.")
            self._redescribe()  # autocast changes the picture
        armed = self.tracker.armed
        self._steps.check_scale_drop()
        if self.tracker.armed and not armed:  # armed by a skip seen just now: this call is already under way
            self.tracker.catch_up(module, args)
        self._steps.forward_seen()

    def _backward_end(self) -> None:
        """End of a backward pass on an iteration that will be sampled: gradients before clipping (the
        OutputProbe guards it)."""
        self._sampler.capture(self._scales.in_grads())

    @guarded_method
    def _on_load_state_dict(self, optimizer: torch.optim.Optimizer) -> None:
        self._redescribe()

    # -- the set-up -----------------------------------------------------------------------------
    def _redescribe(self) -> None:
        """The set-up changed (optimizer state loaded, autocast seen): describe and lint it again."""
        self.info = self._describe()
        self.preflight = lint(self.info)
        self.tracker.start_run(self.info, self.preflight)

    def _describe(self) -> RunInfo:
        info = describe(self.model, self.optimizer, self.layers, scaler_kind=self._kind, run=self.run,
                        rank=self.rank, every=self.every, autocast=self._autocast, typical=self._typical)
        d = self.dist
        return dataclasses.replace(info, local_rank=d.local_rank, world_size=d.world_size, run_id=d.run_id,
                                   restart_count=d.restart_count, trainer=self._trainer)
