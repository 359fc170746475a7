"""The trainer's own per-step numerics (independent of the monitor): what tests and benchmarks check
the monitor against. Each call syncs with the device; `TrainConfig.track_stats=False` skips them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["StepRecord", "fp16_zero_grad_ratio", "grads_finite", "nonfinite_params", "update_ratio"]


@dataclass(frozen=True)
class StepRecord:
    """One iteration (`step` counts from 1).

    `loss`: the loss value back-propagated (after any fault factor); `output_finite`: the decoder's
    predictions were finite; `grads_finite`: every model gradient finite (before unscaling);
    `skipped`: the optimizer step was skipped by the loss scaler; `loss_scale`: the scale used for
    this step's backward (None without scaling); `lr`: the lr of this step's update;
    `fp16_zero_grad_ratio`: share of exactly-zero elements among fp16 parameter gradients (None
    without fp16 params); `nonfinite_params`: names of parameters with any NaN/Inf after the step;
    `update_ratio`: ||param change|| / ||param before|| over all finite parameters (None untracked);
    `voxels`: input voxels in the batch.
    """

    step: int
    loss: float
    output_finite: bool
    grads_finite: bool | None
    skipped: bool
    loss_scale: float | None
    lr: float
    fp16_zero_grad_ratio: float | None = None
    nonfinite_params: tuple[str, ...] = ()
    update_ratio: float | None = None
    voxels: int = 0


def grads_finite(model: nn.Module) -> bool:
    """True when every existing gradient of `model` is finite (one device sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def fp16_zero_grad_ratio(model: nn.Module) -> float | None:
    """Share of exactly-zero gradient elements over all fp16 parameters (a missing grad counts as zero)."""
    params = [p for p in model.parameters() if p.dtype == torch.float16]
    if not params:
        return None
    total = sum(p.numel() for p in params)
    missing = sum(p.numel() for p in params if p.grad is None)
    counts = [(p.grad == 0).sum() for p in params if p.grad is not None]
    zeros = int(torch.stack(counts).sum()) if counts else 0
    return (zeros + missing) / total


def nonfinite_params(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters holding any NaN or Inf (one device sync)."""
    named = list(model.named_parameters())
    bad = torch.stack([~torch.isfinite(p).all() for _, p in named]).tolist()
    return tuple(n for (n, _), b in zip(named, bad, strict=True) if b)


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    """fp32 copies of the parameters, for `update_ratio`."""
    return [p.detach().float().clone() for p in model.parameters()]


def update_ratio(model: nn.Module, before: list[torch.Tensor]) -> float:
    """||after - before|| / ||before|| over parameters finite before and after the step."""
    num = den = 0.0
    for p, old in zip(model.parameters(), before, strict=True):
        new = p.detach().float()
        if bool(torch.isfinite(new).all()) and bool(torch.isfinite(old).all()):
            num += float(((new - old) ** 2).sum())
            den += float((old**2).sum())
    return (num**0.5) / (den**0.5) if den > 0 else float("nan")
