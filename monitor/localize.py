"""Localisation: which module first produced a non-finite activation (forward) or gradient (backward).

Armed by the watcher for one iteration after a non-finite event, then removed (fairseq's
NanDetector idea, without writing attributes onto user modules and without a sync per module):
forward hooks keep per-module counts on the device, in call order; gradients of module outputs are
checked by tensor hooks that return None (they never change a gradient). `resolve()` brings all
counts to the host in one transfer and reports the first hit of each direction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .history import Event
from .layers import module_path

__all__ = ["OUTPUT", "Localizer", "count_nonfinite", "dense", "finite_view", "output_tensors"]

OUTPUT = "[output]"  # pseudo-layer for the model's own output (the root module's forward output)


def output_tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """Floating-point tensors in a module's output: tensors, sparse tensors (`.features` / `.feats`),
    and one level of tuples, lists and dicts. Anything else (None, numbers, generators, objects whose
    attributes raise) holds none: this never raises and never consumes an iterator."""
    found: list[torch.Tensor] = []
    with contextlib.suppress(Exception):  # a hostile output (e.g. __class__ raising): the tensors found so far
        _walk(value, depth, found)
    return found


def _walk(value: Any, depth: int, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            found.append(value)
        return
    for attr in ("features", "feats"):
        inner = _attr(value, attr)
        if isinstance(inner, torch.Tensor):
            _walk(inner, depth, found)
            return
    if depth >= 2:
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            _walk(v, depth + 1, found)
    elif isinstance(value, dict):
        for v in value.values():
            _walk(v, depth + 1, found)
    elif not isinstance(value, (nn.Module, type)):
        for v in _fields(value):  # dataclass-like outputs (e.g. a VAE's `.pred`, `.mean`)
            _walk(v, depth + 1, found)


def _attr(value: Any, name: str) -> Any:
    try:
        return getattr(value, name, None)
    except Exception:  # a property or __getattr__ that raises: the output simply has no such field
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


def _absmax(ts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    vals = [v.detach().abs().amax().float().to(device) for v in map(finite_view, ts) if v is not None and v.numel()]
    return torch.stack(vals).amax() if vals else torch.zeros((), device=device)


def dense(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Plain strided tensors: the ones whose gradients are checked (sparse, nested, meta: not)."""
    return [t for t in ts if t.layout == torch.strided and not t.is_nested and not t.is_meta]


class Localizer:
    """Forward/backward hooks on every named module of `model` until `remove()`. `guard` wraps each
    hook body (the watcher counts a failure inside one; it never reaches the training loop)."""

    def __init__(self, model: nn.Module, guard: Callable[[Callable[..., Any]], Callable[..., Any]] = lambda f: f
                 ) -> None:
        self._guard = guard
        self._forward: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._backward: list[tuple[str, str, torch.Tensor]] = []
        self._active = True
        self._handles = [m.register_forward_hook(guard(self._make_hook(module_path(name) or OUTPUT)))
                         for name, m in model.named_modules()]

    def _make_hook(self, name: str):  # noqa: ANN202 - a closure per module, created once
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._active:
                return
            outs = output_tensors(output)
            count = count_nonfinite(outs)
            if count is None:
                return
            dev = count.device
            self._forward.append((name, str(outs[0].dtype).removeprefix("torch."), count,
                                  _absmax(output_tensors(inputs), dev), _absmax(outs, dev)))
            for t in dense(outs):
                if t.requires_grad:
                    t.register_hook(self._guard(self._grad_hook(name, str(t.dtype).removeprefix("torch."))))

        return hook

    def _grad_hook(self, name: str, dtype: str):  # noqa: ANN202
        def hook(grad: torch.Tensor) -> None:
            if self._active:
                count = count_nonfinite([grad])
                if count is not None:
                    self._backward.append((name, dtype, count))

        return hook

    def remove(self) -> None:
        """Remove every hook. Idempotent; tensor hooks still in a live graph become no-ops."""
        self._active = False
        for h in self._handles:
            h.remove()
        self._handles = []

    def resolve(self, step: int) -> tuple[list[Event], dict[str, int]]:
        """(events for the first non-finite forward output and backward gradient,
        non-finite activation element count per module). One host transfer per device."""
        fwd, bwd = self._forward, self._backward
        self._forward, self._backward = [], []
        counts = [c for _, _, c, _, _ in fwd] + [c for _, _, c in bwd]
        maxes = [x for _, _, _, i, o in fwd for x in (i, o)]
        if not counts:
            return [], {}
        host = _to_host(counts + maxes)
        fcounts, bcounts, host_max = host[:len(fwd)], host[len(fwd):len(counts)], host[len(counts):]
        events: list[Event] = []
        acts: dict[str, int] = {}
        for k, (name, dtype, _, _, _) in enumerate(fwd):
            acts[name] = acts.get(name, 0) + int(fcounts[k])
            if fcounts[k] and not any(e.detail["direction"] == "forward" for e in events):
                events.append(Event(step, "localized", name, "activation", {
                    "direction": "forward", "dtype": dtype, "nonfinite": int(fcounts[k]),
                    "in_absmax": host_max[2 * k], "out_absmax": host_max[2 * k + 1]}))
        for k, (name, dtype, _) in enumerate(bwd):
            if bcounts[k]:
                events.append(Event(step, "localized", name, "grad", {
                    "direction": "backward", "dtype": dtype, "nonfinite": int(bcounts[k])}))
                break
        return events, acts


def _to_host(values: list[torch.Tensor]) -> list[float]:
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        by_device.setdefault(v.device, []).append(i)
    out = [0.0] * len(values)
    for idx in by_device.values():
        host = torch.stack([values[i].float().reshape(()) for i in idx]).cpu().tolist()
        for i, h in zip(idx, host):
            out[i] = h
    return out
