"""`watch_trellis(trainer)`: watch a TRELLIS `BasicTrainer` (trellis/trainers/basic.py) in one line.

    from monitor.integrations.trellis import watch_trellis
    with watch_trellis(trainer, record="runs/vae-{rank}.db"):   # after init_models_and_more()
        trainer.run()

What it reads from the trainer (the attribute names of TRELLIS's BasicTrainer):
- `trainer.models` (dict name -> module; the un-wrapped modules, not the DDP `training_models`):
  watched as one `nn.ModuleDict`, so layers are named `encoder.blocks.0...`;
- `trainer.optimizer`: TRELLIS builds one optimizer over `trainer.master_params`, the models'
  parameters (`amp`, None) or one flat fp32 master copy of them (`inflat_all`);
- `trainer.fp16_mode`: `'amp'` -> `scaler=trainer.scaler` (its GradScaler); `'inflat_all'` ->
  `loss_scale=lambda: 2 ** trainer.log_scale` (every drop of log_scale is a skipped step); None -> no
  scaling.

Two methods of the trainer instance are wrapped (TRELLIS's trainer, never the model, optimizer or
scaler; restored exactly by `close()`):
- `training_losses`: its `loss['loss']` of every micro-batch goes to `observe_loss` (no GPU sync);
- `run_step`: under `fp16_mode=None` TRELLIS skips a step with non-finite gradients by printing a
  warning and not calling `optimizer.step()`; a `run_step` that returns without an optimizer step
  is recorded with `step_skipped()`. (Under `amp` and `inflat_all` the GradScaler or the falling
  log_scale already show every skip.)

Rank: `watch()`'s defaults (torch.distributed's rank, which TRELLIS initialises before building the
trainer); pass `run=`, `record=`, `port=`... through `watch_options`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import check_option_names
from ..errors import ConfigError
from ..watcher import WATCH_OPTIONS, Watcher, watch
from .patch import InstancePatch

__all__ = ["TrellisWatch", "watch_trellis"]

MODES = ("inflat_all", "amp", None)


def _scaling(trainer: Any) -> dict[str, Any]:
    """watch() keyword for the trainer's fp16_mode."""
    mode = getattr(trainer, "fp16_mode", None)
    if mode not in MODES:
        raise ConfigError(f"watch_trellis(): trainer.fp16_mode must be one of {MODES}, got {mode!r}")
    if mode == "amp":
        if getattr(trainer, "scaler", None) is None:
            raise ConfigError("watch_trellis(): trainer.fp16_mode is 'amp' but trainer.scaler is missing: "
                              "call watch_trellis() after trainer.init_models_and_more()")
        return {"scaler": trainer.scaler}
    if mode == "inflat_all":
        if not isinstance(getattr(trainer, "log_scale", None), (int, float)):
            raise ConfigError("watch_trellis(): trainer.fp16_mode is 'inflat_all' but trainer.log_scale is not "
                              "a number: call watch_trellis() after trainer.init_models_and_more()")
        return {"loss_scale": lambda: 2.0 ** trainer.log_scale}
    return {}


def _models(trainer: Any) -> nn.ModuleDict:
    models = getattr(trainer, "models", None)
    if not isinstance(models, dict) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise ConfigError("watch_trellis(): trainer.models must be a non-empty dict of name -> torch.nn.Module "
                          f"(TRELLIS's BasicTrainer), got {type(models).__name__}")
    return nn.ModuleDict(models)  # a new container: the models themselves are not changed


def watch_trellis(trainer: Any, **watch_options: Any) -> TrellisWatch:
    """Watch a TRELLIS `BasicTrainer`-shaped trainer; call it after `init_models_and_more()` (TRELLIS's
    constructor does). `watch_options`: any `monitor.watch()` option but `scaler` / `loss_scale`,
    which come from `trainer.fp16_mode`. Returns a `TrellisWatch`: `close()` it, or use `with`."""
    for arg in ("scaler", "loss_scale", "trainer"):
        if arg in watch_options:
            raise ConfigError(f"watch_trellis(): {arg}= is set by watch_trellis itself (scaler / loss_scale from "
                              "trainer.fp16_mode); do not pass it")
    check_option_names(watch_options, [o for o in WATCH_OPTIONS if o not in ("scaler", "loss_scale", "trainer")],
                       "watch_trellis()")
    scaling = _scaling(trainer)
    model = _models(trainer)
    if getattr(trainer, "optimizer", None) is None:
        raise ConfigError("watch_trellis(): trainer.optimizer is missing: call watch_trellis() after "
                          "trainer.init_models_and_more()")
    return TrellisWatch(trainer, watch(model, trainer.optimizer, **scaling, trainer="trellis", **watch_options))


class TrellisWatch:
    """A `monitor.Watcher` (as `.watcher`; its attributes are reachable here too) plus the two wrapped
    trainer methods. `close()` restores them and closes the watcher; idempotent."""

    def __init__(self, trainer: Any, watcher: Watcher) -> None:
        self.trainer, self.watcher = trainer, watcher
        self._patches: list[InstancePatch] = []
        self._closed = False
        if isinstance(watcher, Watcher):  # not the SLATMON_DISABLE stand-in: nothing to see then
            self._patches = [InstancePatch(trainer, "training_losses", self._wrap_losses),
                             InstancePatch(trainer, "run_step", self._wrap_run_step)]

    def _wrap_losses(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def training_losses(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if not self._closed:
                self.watcher._run_guarded(self._observe, result)
            return result

        return training_losses

    def _observe(self, result: Any) -> None:
        """TRELLIS's training_losses returns (terms, status); terms['loss'] is the micro-batch loss."""
        terms = result[0] if isinstance(result, tuple) else result
        if isinstance(terms, dict) and "loss" in terms:
            self.watcher.observe_loss(terms["loss"])

    def _wrap_run_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def run_step(*args: Any, **kwargs: Any) -> Any:
            before = self.watcher.counters.step
            result = original(*args, **kwargs)
            if not self._closed:
                self.watcher._run_guarded(self._after_run_step, before)
            return result

        return run_step

    def _after_run_step(self, before: int) -> None:
        # fp16_mode=None: no optimizer.step(), no scaler, no scale drop -> the loop skipped by itself
        if self.trainer.fp16_mode is None and self.watcher.counters.step == before:
            self.watcher.step_skipped()

    def close(self) -> None:
        """Restore the trainer's methods, then close the watcher (hooks removed, record flushed)."""
        if self._closed:
            return
        self._closed = True
        for p in self._patches:
            p.restore()
        self._patches = []
        self.watcher.close()

    def findings(self) -> list[Any]:
        return self.watcher.findings()

    def __getattr__(self, name: str) -> Any:
        if name in ("trainer", "watcher"):  # not set yet (failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self.watcher, name)

    def __enter__(self) -> TrellisWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
