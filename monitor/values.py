"""The floating-point tensors inside a module call's arguments and outputs, and their non-finite counts.

`output_tensors(value)`: tensors, sparse tensors (`.features` / `.feats`), and one level of tuples,
lists, dicts and dataclass-like objects. `input_slots(args, kwargs)`: the dense floating tensors of a
call's arguments, each named as passed (`args[0]`, `kwargs['cond']`, `args[0].feats`,
`args[1]['image']`). `nonfinite_counts(tensors)`: NaN+Inf counts on the device, no host read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MAX_SLOTS", "absmax", "data_slots", "dense", "input_slots", "nonfinite_counts", "nonfinite_sums",
           "output_tensors"]

MAX_DEPTH = 3
MAX_SLOTS = 64  # tensors named per call


def output_tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Floating-point tensors in a module's output: tensors, sparse tensors (`.features` / `.feats`),
    and one level of tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
        return
    for attr in ("features", "feats"):
        inner = getattr(value, attr, None)
        if isinstance(inner, torch.Tensor):
            yield from output_tensors(inner, depth)
            return
    if depth >= 2:
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from output_tensors(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from output_tensors(v, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        for v in vars(value).values():  # dataclass-like outputs (e.g. a VAE's `.pred`, `.mean`)
            yield from output_tensors(v, depth + 1)


def dense(ts: Iterator[torch.Tensor] | list[torch.Tensor]) -> list[torch.Tensor]:
    """Strided, non-empty tensors (sparse / nested layouts are not checked)."""
    return [t for t in ts if t.layout == torch.strided and t.numel() > 0]


def _walk(value: Any, name: str, depth: int) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.layout == torch.strided and value.numel() > 0:
            yield name, value
        return
    if depth >= MAX_DEPTH or isinstance(value, (str, bytes, nn.Module, type)):
        return
    for attr in ("feats", "features"):  # sparse tensors (TRELLIS SparseTensor, spconv)
        inner = getattr(value, attr, None)
        if isinstance(inner, torch.Tensor):
            yield from _walk(inner, f"{name}.{attr}", depth + 1)
            return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{name}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{name}[{k!r}]", depth + 1)
    elif hasattr(value, "__dict__"):  # dataclass-like batches
        for k, v in vars(value).items():
            yield from _walk(v, f"{name}.{k}", depth + 1)


def input_slots(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The dense floating-point tensors in a call's arguments, named as passed (at most MAX_SLOTS)."""
    found = [*_walk(tuple(args), "args", 0), *_walk(dict(kwargs), "kwargs", 0)]
    return found[:MAX_SLOTS]


def data_slots(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The input slots that are data: tensors no differentiable computation produced (`grad_fn` None), as a
    loader's batch. Another entry module's output passed on (TRELLIS's models dict: decoder(encoder(x)))
    is an activation of the model, not data."""
    return [(n, t) for n, t in input_slots(args, kwargs) if t.grad_fn is None]


def nonfinite_counts(tensors: list[torch.Tensor]) -> torch.Tensor:
    """NaN+Inf element count per tensor, float32 on the first tensor's device; no host read.
    (x - x is 0 for finite x and NaN otherwise; its L0 norm counts those, in fused kernels.)"""
    ts = [t.detach() for t in tensors]
    return _norms(torch._foreach_sub(ts, ts), 0, ts[0].device)


def nonfinite_sums(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per tensor, a float32 value that is NaN/Inf exactly when the tensor holds a NaN/Inf: its sum (one
    read of the data, no temporary; ~10x cheaper than counting). float64 tensors: 0 when finite, so a
    large finite sum is not mistaken for one; a float32/16 tensor whose finite values sum past 3.4e38
    would be. On the first tensor's device; no host read."""
    ts = [t.detach() for t in tensors]
    device = ts[0].device
    sums = []
    for t in ts:
        s = t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
        if s.dtype == torch.float64:
            s = torch.where(torch.isfinite(s), torch.zeros_like(s), s).to(torch.float32)
        sums.append(s.to(device))
    return torch.stack(sums)


def absmax(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The largest |x| over `tensors` (NaN when any element is NaN), float32 on the first one's device."""
    ts = [t.detach() for t in tensors]
    return _norms(ts, float("inf"), ts[0].device).amax()


def _norms(ts: list[torch.Tensor], order: float, device: torch.device) -> torch.Tensor:
    """Per-tensor `order`-norms as float32 on `device` (accumulated in float32, float64 in float64)."""
    wide = [i for i, t in enumerate(ts) if t.dtype == torch.float64]
    narrow = [i for i in range(len(ts)) if i not in wide]
    out: list[torch.Tensor | None] = [None] * len(ts)
    for idx, kw in ((narrow, {"dtype": torch.float32}), (wide, {})):
        if idx:
            for i, n in zip(idx, torch._foreach_norm([ts[i] for i in idx], order, **kw)):
                out[i] = n.to(device, torch.float32)
    return torch.stack(out)  # type: ignore[arg-type]
