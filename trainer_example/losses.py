"""The VAE objective: occupancy BCE + attribute L1 on occupied voxels + 1e-6 KL + a volume regulariser.

All terms are computed in fp32 (the output head is fp32 in every precision mode).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import Batch
from .model import VAEOutput

__all__ = ["LossOps", "LossTerms", "vae_loss"]


@dataclass(frozen=True)
class LossTerms:
    """`total` is what is back-propagated; the others are its (unweighted) parts, for logging."""

    total: torch.Tensor
    occupancy: torch.Tensor
    attrs: torch.Tensor
    kl: torch.Tensor
    volume: torch.Tensor


@dataclass(frozen=True)
class LossOps:
    """The raw operations the loss calls. A "loss" fix (monitor's `loss_eps` snippet) is applied by
    swapping in the guarded functions its snippet defines (`safe_log`, `safe_div`, `safe_exp`)."""

    log: Callable[[torch.Tensor], torch.Tensor] = torch.log
    div: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = operator.truediv
    exp: Callable[[torch.Tensor], torch.Tensor] = torch.exp


def vae_loss(
    out: VAEOutput, batch: Batch, lambda_kl: float = 1e-6, lambda_volume: float = 0.01, empty_target: bool = False,
    ops: LossOps | None = None,
) -> LossTerms:
    """Loss of one batch.

    The volume term is the Bernoulli KL between the target's and the prediction's occupied fractions,
    written as TRELLIS-style code often is, with the prediction clamped but no xlogy guard on the
    target: a batch whose target fraction is 0 gives 0 * log(0) = NaN. `empty_target=True` forces
    that case (the `loss-nan` fault). `ops`: the log / division / exp to use (default: torch's own).
    """
    ops = ops or LossOps()
    pred = out.pred.feats.float()
    logits, attrs = pred[:, 0], pred[:, 1:]
    occupancy = F.binary_cross_entropy_with_logits(logits, batch.occupancy)
    occupied = batch.occupancy > 0
    attr_l1 = (attrs[occupied] - batch.attrs[occupied]).abs().mean()
    kl = 0.5 * torch.mean(out.mean**2 + ops.exp(out.logvar) - out.logvar - 1)
    t = batch.occupancy.mean() * (0.0 if empty_target else 1.0)
    p = torch.sigmoid(logits).mean().clamp(1e-6, 1 - 1e-6)  # the prediction is guarded, the target is not
    volume = t * ops.log(ops.div(t, p)) + (1 - t) * ops.log(ops.div(1 - t, 1 - p))
    total = occupancy + attr_l1 + lambda_kl * kl + lambda_volume * volume
    return LossTerms(total, occupancy, attr_l1, kl, volume)
