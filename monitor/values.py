"""The floating-point tensors inside a module call's arguments and outputs, and their non-finite counts.

`output_tensors(value)`: tensors, sparse tensors (`.features` / `.feats`), and one level of tuples,
lists, dicts and dataclass-like objects. `input_slots(args, kwargs)`: the dense floating tensors of a
call's arguments, each named as passed (`args[0]`, `kwargs['cond']`, `args[0].feats`,
`args[1]['image']`). `nonfinite_counts(tensors)`: NaN+Inf counts on the device, no host read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MAX_SLOTS", "absmax", "count_nonfinite", "data_slots", "dense", "finite_view", "input_slots",
           "nonfinite_counts", "nonfinite_sums", "output_tensors"]

MAX_DEPTH = 3
MAX_SLOTS = 64  # tensors named per call


def output_tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """Floating-point tensors in a module's output: tensors, sparse tensors (`.features` / `.feats`),
    and one level of tuples, lists, dicts and dataclass-like objects. Anything else (None, numbers,
    generators, objects whose attributes raise) holds none: this never raises and never consumes an
    iterator."""
    found: list[torch.Tensor] = []
    with contextlib.suppress(Exception):  # a hostile output (e.g. __class__ raising): the tensors found so far
        _collect(value, depth, found)
    return found


def _collect(value: Any, depth: int, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            found.append(value)
        return
    for attr in ("features", "feats"):
        inner = _attr(value, attr)
        if isinstance(inner, torch.Tensor):
            _collect(inner, depth, found)
            return
    if depth >= 2:
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            _collect(v, depth + 1, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, depth + 1, found)
    elif not isinstance(value, (nn.Module, type)):
        for v in _fields(value):  # dataclass-like outputs (e.g. a VAE's `.pred`, `.mean`)
            _collect(v, depth + 1, found)


def _attr(value: Any, name: str) -> Any:
    try:
        return getattr(value, name, None)
    except Exception:  # a property or __getattr__ that raises: the value simply has no such field
        return None


def _fields(value: Any) -> list[Any]:
    try:
        return list(vars(value).values())
    except Exception:  # no __dict__ (ints, generators, slotted objects), or one that raises
        return []


def finite_view(t: torch.Tensor) -> torch.Tensor | None:
    """The elements of `t` whose finiteness can be counted: a dense tensor itself, a sparse tensor's
    stored values; None for what holds no countable data here (nested and meta tensors)."""
    if t.is_nested or t.is_meta:
        return None
    if t.layout == torch.strided:
        return t
    if t.layout == torch.sparse_coo:
        return t._values()  # also un-coalesced: duplicates only add, a NaN stays a NaN
    if t.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        return t.values()
    return None


def count_nonfinite(ts: list[torch.Tensor]) -> torch.Tensor | None:
    """NaN+Inf elements of `ts` on the first countable one's device (no sync), or None when none is
    countable."""
    views = [v for v in map(finite_view, ts) if v is not None]
    if not views:
        return None
    dev = views[0].device
    return sum((~torch.isfinite(v.detach())).sum().to(dev) for v in views)  # type: ignore[return-value]


def dense(ts: Iterator[torch.Tensor] | list[torch.Tensor]) -> list[torch.Tensor]:
    """Strided, non-empty tensors (sparse, nested and meta tensors are not checked)."""
    return [t for t in ts if t.layout == torch.strided and not t.is_nested and not t.is_meta and t.numel() > 0]


def _walk(value: Any, name: str, depth: int) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and dense([value]):
            yield name, value
        return
    if depth >= MAX_DEPTH or isinstance(value, (str, bytes, nn.Module, type)):
        return
    for attr in ("feats", "features"):  # sparse tensors (TRELLIS SparseTensor, spconv)
        inner = _attr(value, attr)
        if isinstance(inner, torch.Tensor):
            yield from _walk(inner, f"{name}.{attr}", depth + 1)
            return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{name}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{name}[{k!r}]", depth + 1)
    else:  # dataclass-like batches
        for k, v in _items(value):
            yield from _walk(v, f"{name}.{k}", depth + 1)


def _items(value: Any) -> list[tuple[str, Any]]:
    try:
        return list(vars(value).items())
    except Exception:  # no __dict__, or one that raises
        return []


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
