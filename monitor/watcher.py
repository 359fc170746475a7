"""`monitor.watch()`: hooks on a live training run; statistics to Prometheus, a run record, findings.

Hooks (all removed by `close()`): the optimizer's step pre/post hooks and load_state_dict post
hook, a forward pre-hook on the model's root module, a wrapper around the GradScaler instance's
`update()`, and, for one iteration after a non-finite event, localisation hooks on every module.

GPU syncs: none on unsampled steps; one host transfer per sampled step (in the post-hook, or at the
next forward under an fp32 master copy); one `get_scale()` after a step the scaler skipped.
Threads: hooks run in the training thread; the HTTP endpoint and the record writer have their own.
Any exception inside the monitor is counted (`slatmon_monitor_errors_total`), logged once, and
swallowed: training goes on.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import check_args, check_guard, default_rank, default_run
from .findings import Finding
from .guard.hooks import GuardHooks
from .history import History, RunInfo
from .layers import LayerMap
from .localize import OutputProbe
from .preflight import describe, lint
from .sampler import StepSampler
from .scaling import CustomScaleTap, GradScalerTap, scaler_kind
from .snapshot import Counters, Snapshot
from .tracker import Tracker

__all__ = ["Watcher", "watch"]

log = logging.getLogger("monitor")


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hook body wrapper: time it, and count/log/swallow any exception."""

    @functools.wraps(fn)
    def wrapper(self: Watcher, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            fn(self, *args, **kwargs)
        except Exception as exc:  # never raise into the training loop
            self._error(exc)
        finally:
            self.counters.monitor_seconds += time.perf_counter() - t0

    return wrapper


class Watcher:
    """Returned by `watch()`. Use as a context manager or call `close()`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, scaler: Any = None,
                 loss_scale: Callable[[], float] | None = None, every: int = 1, run: str | None = None,
                 rank: int | None = None, port: int | None = 9108, host: str = "127.0.0.1",
                 record: str | os.PathLike[str] | None = None, max_layers: int = 512,
                 group_depth: int | None = None, update_ratio: bool = True,
                 targets_dir: str | os.PathLike[str] | None = None, on_nonfinite: str = "warn",
                 max_skips: int | None = None, checkpoint: Callable[[dict[str, Any]], Any] | None = None) -> None:
        check_args(model, optimizer, scaler, loss_scale, every, port, host, max_layers)
        check_guard(on_nonfinite, max_skips, checkpoint)
        self.model, self.optimizer, self.every = model, optimizer, every
        self.run, self.rank = default_run(run), default_rank(rank)
        self.counters = Counters()
        self._closed = False
        self._errors_logged = 0
        self._loss: torch.Tensor | None = None
        self._described_after_step = False
        self._autocast: str | None = None
        self._device_type = next((p.device.type for p in model.parameters()), "cpu")
        self.layers = LayerMap.build(model, max_layers, group_depth)
        self._sampler = StepSampler(self.layers, optimizer, update_ratio)
        self._kind = scaler_kind(scaler, loss_scale)
        if self._kind in ("none", "disabled"):
            self.counters.loss_scale = 1.0
        self.info: RunInfo = self._describe()
        self.preflight = lint(self.info)
        self.tracker = Tracker(self, record)  # may refuse the record path: before anything is hooked
        self.tracker.start_run(self.info, self.preflight)
        self._scaler_tap = GradScalerTap(scaler, self._on_scaler_update) if self._kind == "grad_scaler" else None
        self._custom = CustomScaleTap(loss_scale) if loss_scale is not None else None
        self._guard = None if on_nonfinite == "warn" else GuardHooks(self, on_nonfinite, max_skips, checkpoint)
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            *(self._guard.register() if self._guard is not None else []),  # after _pre_step, before _post_step
            optimizer.register_step_post_hook(self._post_step),
            optimizer.register_load_state_dict_post_hook(self._on_load_state_dict),
            model.register_forward_pre_hook(self._pre_forward),
        ]
        self._output = OutputProbe(model, lambda: self.tracker.will_sample(self.counters.step + 1))
        self.url: str | None = None
        self._server = None
        self._target = None
        if port is not None:
            try:
                self._serve(host, port, targets_dir or os.environ.get("SLATMON_TARGETS_DIR"))
            except BaseException:
                self.close()
                self.tracker.discard_record()  # nothing was recorded yet: leave no empty file behind
                raise

    # -- public -----------------------------------------------------------------------------
    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Remember this iteration's loss (a reference; read on sampled steps only, no sync here)."""
        if not self._closed:
            self._loss = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))

    def history(self) -> History:
        """Everything observed so far (bounded in memory; the run record keeps it all)."""
        return self.tracker.history(self.info, self.preflight)

    def findings(self) -> list[Finding]:
        """The newest diagnosis: pre-flight findings and every rule over the history, ranked.
        Call it from the training thread (it may complete a pending sample on the device)."""
        self._finish_guarded()
        return self.tracker.findings(self.info, self.preflight)

    @property
    def snapshot(self) -> Snapshot:
        return self.tracker.snapshot

    def close(self) -> None:
        """Remove every hook, stop the endpoint, flush the record. Idempotent."""
        if self._closed:
            return
        self._finish_guarded()
        self._closed = True
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._guard is not None:
            self._guard.remove()
        self._output.remove()
        if self._scaler_tap is not None:
            self._scaler_tap.remove()
        self.tracker.close()
        if self._target is not None:
            self._target.remove()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"step {self.counters.step}"
        return f"<Watcher run={self.run!r} rank={self.rank} {state} url={self.url}>"

    # -- hooks ------------------------------------------------------------------------------
    @_guarded
    def _finish_guarded(self) -> None:
        self._finish_pending()

    @_guarded
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._finish_pending()  # a deferred (master-copy) sample whose forward never came
        if self._custom is not None and self._custom.dropped():
            self._skipped()
        if self._scaler_tap is not None:
            self._scaler_tap.stepped()
        step = self._advance()
        self.tracker.resolve_localization(step)
        if self.tracker.should_sample(step):
            scale, divisor = self._scale_now()
            self._sampler.begin(step, self._loss, scale, divisor, self._output.take())
        else:
            self._output.take()

    @_guarded
    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._sampler.pending and not self._sampler.master:
            self._finish_pending()

    def _guard_skipped(self, step: int, reason: str) -> None:
        """The guard kept `step` out of the weights (called before it undoes anything): count it like a
        scaler skip, at its own step number; a pending sample of that step is finished now, so its rows
        show the update as computed."""
        self.counters.skipped_steps += 1
        if self._sampler.pending and self._sampler.step == step:
            self._finish_pending(skip_reason=reason)
            return
        current = step == self.counters.step  # a verdict read one step late has no loss of its own
        loss = None if self._loss is None or not current else float(self._loss.float())  # skips are rare
        self.tracker.skipped_step(step, self._scale_value(), loss, None, reason=reason)

    @_guarded
    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        self._finish_pending()
        if self._autocast is None and torch.is_autocast_enabled(self._device_type):
            self._autocast = str(torch.get_autocast_dtype(self._device_type)).removeprefix("torch.")
            self._redescribe()  # autocast changes the picture
        if self._custom is not None and self._custom.dropped():
            self._skipped()

    @_guarded
    def _on_scaler_update(self, skipped: bool) -> None:
        if skipped or self.counters.loss_scale is None:
            self.counters.loss_scale = self._scaler_tap.scale()  # type: ignore[union-attr]  # one sync
        if skipped:
            self._skipped()

    @_guarded
    def _on_load_state_dict(self, optimizer: torch.optim.Optimizer) -> None:
        self._redescribe()

    def _redescribe(self) -> None:
        """The set-up changed (optimizer state loaded, autocast seen): describe and lint it again."""
        self.info = self._describe()
        self.preflight = lint(self.info)
        self.tracker.start_run(self.info, self.preflight)

    # -- internals --------------------------------------------------------------------------
    def _advance(self) -> int:
        self.counters.step += 1
        self.counters.time = time.time()
        return self.counters.step

    def _skipped(self) -> None:
        self.counters.skipped_steps += 1
        step = self._advance()
        self.tracker.resolve_localization(step)
        out = self._output.take()
        loss = None if self._loss is None else float(self._loss.float())  # syncs; skipped steps are rare
        self.tracker.skipped_step(step, self._scale_value(), loss, None if out is None else int(out))

    def _scale_now(self) -> tuple[torch.Tensor | float | None, float]:
        """(loss scale for this step, the scale the model's grads still carry)."""
        if self._scaler_tap is not None:
            return self._scaler_tap.scale_tensor(), 1.0
        if self._custom is not None:
            s = self._custom.scale()
            self._custom.last = s
            return s, s if self._sampler.master else 1.0
        return self.counters.loss_scale, 1.0

    def _scale_value(self) -> float | None:
        """The scale after a skip: the GradScaler's was just read by _on_scaler_update."""
        if self._custom is not None:
            return self._custom.last
        return self.counters.loss_scale

    def _finish_pending(self, skip_reason: str | None = None) -> None:
        if self._sampler.pending:
            sample = self._sampler.finish()
            if sample is not None:
                if not self._described_after_step:  # optimizer state exists now: record its dtype
                    self._described_after_step = True
                    self.info = self._describe()
                    self.tracker.start_run(self.info, self.preflight)
                if sample.loss_scale is not None:
                    self.counters.loss_scale = sample.loss_scale
                self.tracker.sampled_step(sample, self.info, skip_reason)

    def _describe(self) -> RunInfo:
        return describe(self.model, self.optimizer, self.layers, scaler_kind=self._kind, run=self.run,
                        rank=self.rank, every=self.every, autocast=self._autocast)

    def _serve(self, host: str, port: int, targets_dir: str | os.PathLike[str] | None) -> None:
        from .export.server import serve

        self._server, self.url = serve(self, host, port)
        if targets_dir:  # file-based service discovery: Prometheus finds this run by itself
            from .ops.targets import register

            self._target = register(targets_dir, host, self._server.server_address[1], self.run, self.rank)

    def _error(self, exc: BaseException) -> None:
        self.counters.errors += 1
        if self._errors_logged == 0:
            log.exception("slat-monitor: error inside the monitor (training continues; further errors are "
                          "counted in slatmon_monitor_errors_total): %s", exc)
        self._errors_logged += 1


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None,
          loss_scale: Callable[[], float] | None = None, every: int = 1, run: str | None = None,
          rank: int | None = None, port: int | None = 9108, host: str = "127.0.0.1",
          record: str | os.PathLike[str] | None = None, *, on_nonfinite: str = "warn",
          max_skips: int | None = None, checkpoint: Callable[[dict[str, Any]], Any] | None = None,
          **options: Any) -> Watcher:
    """Watch `model` trained by `optimizer`; see README "Using the monitor" for every option.

    scaler: a torch.amp.GradScaler (or None). loss_scale: a callable returning a hand-made loss
    scale (e.g. `lambda: 2 ** trainer.log_scale`); under an fp32 master copy the model's `.grad`s
    are taken to carry that scale, otherwise gradients are taken as unscaled at `optimizer.step()`.
    every: sample every N optimizer steps. port: 9108 by default, 0 for any free port, None for no
    endpoint. record: path of the SQLite run record, or None. Extra keyword options: max_layers,
    group_depth, update_ratio, targets_dir (Prometheus file_sd folder; env SLATMON_TARGETS_DIR).
    on_nonfinite: "warn" (default: only report), "skip" (a step with non-finite gradients, or whose
    update made parameters/optimizer state non-finite, is kept out of the weights and counted as
    skipped; after `max_skips` consecutive skips it stops) or "stop" (raise `monitor.GuardStop` out of
    `optimizer.step()`, weights as before that step, after calling `checkpoint(last_good_state)`).
    Set SLATMON_DISABLE=1 to turn every hook off (returns a Watcher that records nothing).
    """
    if os.environ.get("SLATMON_DISABLE") == "1":
        from .disabled import DisabledWatcher

        return DisabledWatcher(model, optimizer)  # type: ignore[return-value]
    return Watcher(model, optimizer, scaler=scaler, loss_scale=loss_scale, every=every, run=run, rank=rank,
                   port=port, host=host, record=record, on_nonfinite=on_nonfinite, max_skips=max_skips,
                   checkpoint=checkpoint, **options)
