"""Two per-layer signals of a sampled step, finished on the host: the share of 16-bit weight elements the
update left exactly unchanged (updates rounding away), and Adam's second-moment lag RMS(g^2 / v_hat).

The device-side parts are queued by the sampler on its DeviceBatch (a non-zero count of the update's
before - after difference on the update ratio's sketch; monitor/probes/moment_lag.py); these helpers
turn the fetched per-tensor numbers into per-layer values. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["LOW_PRECISION", "rms", "scale_rms", "share", "unchanged"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def unchanged(changed: list[float | None], grad_norms: list[float | None], measured: list[int | None],
              params: Sequence[torch.Tensor]) -> list[float | None]:
    """Per tensor: its elements the update left exactly unchanged, from `changed` (non-zero elements of
    before - after over the `measured[i]` elements compared: a sketch, or the whole of a small packed
    tensor), scaled to the whole tensor. None where not measured (not 16-bit, no copy), where the
    gradient was 0 or absent (nothing was asked to move), or where the count is unknown (a NaN in the
    difference makes the fused CUDA count NaN)."""
    out: list[float | None] = [None] * len(params)  # `changed` is empty without the update ratio's copies
    for i, n in enumerate(changed):
        m = measured[i] if i < len(measured) else None
        if n is not None and m and math.isfinite(n) and grad_norms[i]:
            out[i] = (m - n) * params[i].numel() / m
    return out


def scale_rms(v: dict[str, list[float | None]], key: str, factors: list[float]) -> None:
    """Sums of g^2 / v_hat measured on a sketch, scaled to the whole tensor (`factors`, 0: not measured),
    in place."""
    v[key] = [None if x is None or not f else x * f for x, f in zip(v.get(key, []), factors)]


def share(counts: list[float | None], numels: list[int]) -> float | None:
    """The known counts over the elements of their tensors; None when none is known."""
    known = [(c, n) for c, n in zip(counts, numels) if c is not None]
    total = sum(n for _, n in known)
    return sum(c for c, _ in known) / total if total else None


def rms(sums: list[float | None], numels: list[int]) -> float | None:
    """sqrt(sum of the known per-tensor sums / their elements): the RMS over a layer's elements."""
    mean = share(sums, numels)
    return None if mean is None else math.sqrt(max(mean, 0.0))
