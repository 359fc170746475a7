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
    `update_ratio`: ||param change|| / ||param before|| over all finite parameters (None untracked).
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


def grads_finite(model: nn.Module) -> bool:
    """True when every existing gradient of `model` is finite."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return all(bool(torch.isfinite(g).all()) for g in grads)


def fp16_zero_grad_ratio(model: nn.Module) -> float | None:
    """Share of exactly-zero gradient elements over all fp16 parameters (a missing grad counts as zero)."""
    zeros = total = 0
    for p in model.parameters():
        if p.dtype != torch.float16:
            continue
        total += p.numel()
        zeros += p.numel() if p.grad is None else int((p.grad == 0).sum())
    return zeros / total if total else None


def nonfinite_params(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters holding any NaN or Inf."""
    return tuple(n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all()))


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
