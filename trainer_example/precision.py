"""Precision modes as TRELLIS has them, each owning the optimizer and the backward/step recipe.

- `fp32`: fp32 model, AdamW on its parameters.
- `fp16-naive`: blocks fp16, AdamW straight on the model's (partly fp16) parameters, no scaling
  (the TRELLIS #162 setup: AdamW's state is fp16 too).
- `amp`: fp32 weights, `torch.autocast` (fp16) and `torch.amp.GradScaler`.
- `inflat_all`: blocks fp16, ONE flattened fp32 master parameter in AdamW, hand-made loss scale
  2**log_scale (starts at 20): non-finite grads skip the step and lower log_scale by 1; otherwise
  unscale, clip, step, copy back to the model and raise log_scale by 1e-3.

Usage per iteration: `zero_grad()`, forward under `autocast()`, `backward(loss)`, `apply() -> skipped`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .model import SlatVAE

__all__ = ["Precision", "make_precision"]


class Precision:
    """fp32 / fp16-naive: AdamW directly on the model parameters."""

    scaler: torch.amp.GradScaler | None = None

    def __init__(self, model: SlatVAE, lr: float, eps: float, amsgrad: bool, clip: float | None) -> None:
        self.model, self.clip = model, clip
        self.optimizer = torch.optim.AdamW(self._opt_params(), lr=lr, eps=eps, amsgrad=amsgrad, weight_decay=0.0)

    def _opt_params(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def loss_scale(self) -> float | None:
        """Current loss scale, None when the mode does not scale the loss."""
        return None

    def loss_scale_fn(self) -> Callable[[], float] | None:
        """Callable for `monitor.watch(loss_scale=...)`, for hand-made scaling only."""
        return None

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def apply(self) -> bool:
        """Clip and step; returns True when the step was skipped."""
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return False


class AmpPrecision(Precision):
    """fp32 weights, autocast to fp16, GradScaler (skips a step with non-finite grads, halves the scale)."""

    def __init__(self, model: SlatVAE, lr: float, eps: float, amsgrad: bool, clip: float | None) -> None:
        super().__init__(model, lr, eps, amsgrad, clip)
        self.device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(self.device_type)

    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale())

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return torch.autocast(self.device_type, dtype=torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def apply(self) -> bool:
        assert self.scaler is not None
        self.scaler.unscale_(self.optimizer)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return self.scaler.get_scale() < before


class InflatAllPrecision(Precision):
    """TRELLIS `fp16_mode='inflat_all'`: fp32 flat master copy of every model parameter."""

    def __init__(self, model: SlatVAE, lr: float, eps: float, amsgrad: bool, clip: float | None) -> None:
        self.model_params = [p for p in model.parameters() if p.requires_grad]
        flat = torch.cat([p.detach().float().reshape(-1) for p in self.model_params])
        self.master = nn.Parameter(flat)
        self.log_scale = 20.0
        super().__init__(model, lr, eps, amsgrad, clip)

    def _opt_params(self) -> list[nn.Parameter]:
        return [self.master]

    def loss_scale(self) -> float | None:
        return 2.0**self.log_scale

    def loss_scale_fn(self) -> Callable[[], float] | None:
        return self.loss_scale  # type: ignore[return-value]

    def backward(self, loss: torch.Tensor) -> None:
        (loss * 2.0**self.log_scale).backward()

    def apply(self) -> bool:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.model_params]
        self.master.grad = torch.cat([g.detach().float().reshape(-1) for g in grads])
        self.master.grad.mul_(1.0 / 2.0**self.log_scale)
        if not bool(torch.isfinite(self.master.grad).all()):
            self.log_scale -= 1.0
            return True
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_([self.master], self.clip)
        self.optimizer.step()
        self._master_to_model()
        self.log_scale += 1e-3
        return False

    @torch.no_grad()
    def _master_to_model(self) -> None:
        offset = 0
        for p in self.model_params:
            p.copy_(self.master[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def make_precision(
    name: str, model: SlatVAE, lr: float, eps: float, amsgrad: bool, clip: float | None, device: torch.device
) -> Precision:
    """Convert `model` for mode `name` (in place) and build its optimizer recipe.

    On the CPU the decoder's subdivide blocks stay fp32 in the fp16 modes (see
    `SlatVAE.convert_to_fp16`); on CUDA they are fp16 as in TRELLIS.
    """
    if name in ("fp16-naive", "inflat_all"):
        model.convert_to_fp16(upsample=device.type == "cuda")
    if name in ("fp32", "fp16-naive"):
        return Precision(model, lr, eps, amsgrad, clip)
    if name == "amp":
        return AmpPrecision(model, lr, eps, amsgrad, clip)
    if name == "inflat_all":
        return InflatAllPrecision(model, lr, eps, amsgrad, clip)
    raise ValueError(f"unknown precision {name!r}; choose fp32, inflat_all, amp or fp16-naive")
