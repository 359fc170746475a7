"""`SlatMonitorCallback`: watch a Hugging Face `Trainer` run in one line (extra `huggingface`).

    from monitor.integrations.huggingface import SlatMonitorCallback
    with SlatMonitorCallback(record="runs/hf-{rank}.db") as slatmon:
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[slatmon]).train()

At `on_train_begin` (after accelerate prepared the optimizer) it watches the Trainer's model and the
torch optimizer inside accelerate's `AcceleratedOptimizer` (`optimizer.optimizer`). The loss scale is
read from the accelerator's GradScaler, which that wrapper holds as `optimizer.scaler` (fp16 AMP;
None under bf16 and fp32, where the scale is 1). The Trainer clips, then calls
`on_pre_optimizer_step`, `optimizer.step()` (accelerate: `scaler.step()` + `scaler.update()`), then
`on_optimizer_step`: the torch optimizer's own step hooks fire in between, so the watcher sees the
update (fused optimizers included: GradScaler's `found_inf` is read there) and the scaler's skipped
steps (at `update()`) without help; gradients are read at the end of backward, before clipping.

The loss: a forward hook on the model reads the `loss` of its output (a mapping / ModelOutput with
`loss`, or the first element of a tuple) in training mode with autograd on, per micro-batch.
Non-finite losses are also counted here, on the device (no sync), because `logging_nan_inf_filter`
(on by default) replaces them in the Trainer's own logged loss: `nonfinite_losses`, and the key
`slatmon_nonfinite_losses` added to the logs of every `on_log` (seen by the callbacks after this one).

Stops at `on_train_end`. The Trainer calls no callback when training raises: use the callback as a
context manager (or call `close()`) to remove every hook then; a new `train()` also closes a watcher
a failed one left behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from ..config import check_option_names
from ..errors import ConfigError
from ..watcher import WATCH_OPTIONS, Watcher, watch

__all__ = ["SlatMonitorCallback"]


def model_loss(output: Any) -> torch.Tensor | None:
    """The loss a Hugging Face-style forward returned, as Trainer.compute_loss takes it, or None."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if loss is None and isinstance(output, (tuple, list)) and output:
        loss = output[0]
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


class SlatMonitorCallback(TrainerCallback):
    """`watch_options`: any `monitor.watch()` option but `scaler` / `loss_scale` (from the accelerator)."""

    def __init__(self, **watch_options: Any) -> None:
        for arg in ("scaler", "loss_scale"):
            if arg in watch_options:
                raise ConfigError(f"SlatMonitorCallback(): {arg}= is taken from the Trainer's accelerator; "
                                  "do not pass it")
        check_option_names(watch_options, [o for o in WATCH_OPTIONS if o not in ("scaler", "loss_scale")],
                           "SlatMonitorCallback()")
        self.watch_options = watch_options
        self.watcher: Watcher | None = None  # while training
        self.last_watcher: Watcher | None = None  # the latest, also after close()
        self._loss_hook: torch.utils.hooks.RemovableHandle | None = None
        self._nonfinite: torch.Tensor | None = None  # device-side count of non-finite losses

    # -- attach / detach -----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        self.close()  # a watcher a failed train() left behind
        if not isinstance(model, nn.Module) or optimizer is None:
            raise ConfigError("SlatMonitorCallback(): the Trainer passed no model/optimizer to on_train_begin")
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
        self.watcher = self.last_watcher = watch(model, inner, scaler=getattr(optimizer, "scaler", None),
                                                 **self.watch_options)
        self._nonfinite = None
        self._loss_hook = model.register_forward_hook(self._on_output)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the loss hook and close the watcher (every hook removed, record flushed). Idempotent."""
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        w, self.watcher = self.watcher, None
        if w is not None:
            w.close()

    def __enter__(self) -> SlatMonitorCallback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the iteration ---------------------------------------------------------------------------
    def _on_output(self, module: nn.Module, args: Any, output: Any) -> None:
        w = self.watcher
        if w is None or not module.training or not torch.is_grad_enabled():  # evaluation: not a training loss
            return
        if isinstance(w, Watcher):  # (not SLATMON_DISABLE's stand-in) errors counted by the watcher, never raised
            w._run_guarded(self._observe, w, output)

    def _observe(self, w: Watcher, output: Any) -> None:
        loss = model_loss(output)
        if loss is None:
            return
        w.observe_loss(loss)
        bad = (~torch.isfinite(loss.detach())).sum()  # on the device: no sync
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad

    @property
    def nonfinite_losses(self) -> int:
        """Micro-batch losses that were NaN or Inf so far (syncs with the device)."""
        return 0 if self._nonfinite is None else int(self._nonfinite)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs is not None and self.watcher is not None:
            logs["slatmon_nonfinite_losses"] = self.nonfinite_losses
