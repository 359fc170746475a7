"""Localisation: which module call made the first non-finite activation (forward) or gradient (backward).

Armed by the watcher for one iteration after a non-finite event, then removed (fairseq's NanDetector
idea, without writing attributes onto user modules and without a sync per module). Per module call a
forward pre-hook records its parent (a call stack) and its inputs' non-finite count and abs-max, a
forward hook its outputs'; tensor hooks on its inputs and outputs that require grad record the
gradients w.r.t. them (the hooks return None: they never change a gradient; their handles are
removed with the Localizer). Everything stays on the device until `resolve()`, which brings it to the
host in one transfer per device and names the deepest call whose inputs were finite and outputs not
(`culprit.py`), parents included: a parent that made the value in its own code between finite
children is named, not the child that received it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .culprit import Call, backward_culprit, culprit_detail, forward_culprit
from .history import Event
from .layers import module_path
from .values import absmax, data_slots, dense, input_slots, nonfinite_counts, output_tensors

__all__ = ["OUTPUT", "Localizer"]

OUTPUT = "[output]"  # pseudo-layer for the model's own output (the root module's forward output)
MAX_INPUT_EVENTS = 16


@dataclass
class _Rec:
    """One call, its statistics still on the device (count, abs-max) per side."""

    name: str
    kind: str
    parent: int | None
    entry: bool
    dtype: str = ""
    ins: tuple[torch.Tensor, torch.Tensor] | None = None
    outs: tuple[torch.Tensor, torch.Tensor] | None = None
    slots: list[tuple[str, list[int], str, int]] = field(default_factory=list)  # entry inputs, named
    slot_counts: torch.Tensor | None = None


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _stats(ts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    return (nonfinite_counts(ts).sum(), absmax(ts)) if ts else None


class Localizer:
    """Hooks on every named module of `model` until `remove()`. `guard` wraps each hook body (the watcher
    counts a failure inside one; it never reaches the training loop). `entries`: the model's entry
    modules (capture.entry_modules); with `inputs=True`, `resolve()` also reports their non-finite
    inputs, named (for a replayed batch)."""

    def __init__(self, model: nn.Module, guard: Callable[[Callable[..., Any]], Callable[..., Any]] = lambda f: f,
                 *, entries: Iterable[nn.Module] = (), inputs: bool = False) -> None:
        self._guard = guard
        self._inputs = inputs
        entry_ids = {id(m) for m in entries}
        self._recs: list[_Rec] = []
        self._grads: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []  # (call, side, count, abs-max)
        self._stack: list[tuple[int, int]] = []  # (id(module), call index) of the calls under way
        self._tensor_handles: list[Any] = []
        self._active = True
        self._handles = []
        self._pre: dict[int, Callable[..., None]] = {}
        for name, m in model.named_modules():
            self._pre[id(m)] = guard(self._pre_hook(module_path(name) or OUTPUT, id(m) in entry_ids))
            self._handles += [m.register_forward_pre_hook(self._pre[id(m)], with_kwargs=True),
                              m.register_forward_hook(guard(self._post_hook))]

    def enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """A call of `module` that began before these hooks were registered (armed from one of its own
        forward pre-hooks): record it as if its pre-hook had run (its kwargs are not seen)."""
        if module is not None and id(module) in self._pre and not self._recs:
            self._pre[id(module)](module, tuple(args), {})

    def _pre_hook(self, name: str, entry: bool) -> Callable[[nn.Module, tuple, dict], None]:
        # kwargs optional: a hook removed while its module runs its pre-hooks (a Localizer disarmed from the
        # watcher's own pre-hook) is still called, without them
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
            if not self._active:
                return
            named = input_slots(args, kwargs or {})
            ins = [t for _, t in named]
            parent = self._stack[-1][1] if self._stack else None
            rec = _Rec(name, type(module).__name__, parent, entry and parent is None, _dtype(ins[0]) if ins else "")
            rec.ins = _stats(ins)
            data = data_slots(args, kwargs or {}) if rec.entry and self._inputs else []
            if data:  # named, for an input event
                rec.slots = [(n, list(t.shape), _dtype(t), t.numel()) for n, t in data]
                rec.slot_counts = nonfinite_counts([t for _, t in data])
            idx = len(self._recs)
            self._recs.append(rec)
            self._stack.append((id(module), idx))
            self._watch_grads(ins, idx, "in")

        return hook

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._active:
            return
        idx = self._pop(id(module))
        if idx is None:
            return
        outs = dense(output_tensors(output))
        rec = self._recs[idx]
        rec.outs = _stats(outs)
        if outs:
            rec.dtype = _dtype(outs[0])
        self._watch_grads(outs, idx, "out")

    def _pop(self, module_id: int) -> int | None:
        """The call of `module_id` ending now; calls above it on the stack raised (their hook never ran)."""
        for k in range(len(self._stack) - 1, -1, -1):
            if self._stack[k][0] == module_id:
                idx = self._stack[k][1]
                del self._stack[k:]
                return idx
        return None

    def _watch_grads(self, ts: list[torch.Tensor], idx: int, side: str) -> None:
        for t in ts:
            if t.requires_grad:
                self._tensor_handles.append(t.register_hook(self._guard(self._grad_hook(idx, side))))

    def _grad_hook(self, idx: int, side: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if self._active and grad.layout == torch.strided and grad.numel() and grad.is_floating_point():
                self._grads.append((idx, side, nonfinite_counts([grad])[0], absmax([grad])))

        return hook

    def remove(self) -> None:
        """Remove every hook, the tensor hooks included. Idempotent."""
        self._active = False
        for h in self._handles + self._tensor_handles:
            h.remove()
        self._handles, self._tensor_handles = [], []

    def resolve(self, step: int) -> tuple[list[Event], dict[str, int]]:
        """(events: the forward and backward culprit calls, and, with `inputs=True`, the entry modules'
        non-finite inputs; non-finite output element count per module). One host transfer per device."""
        recs, grads = self._recs, self._grads
        self._recs, self._grads, self._stack = [], [], []
        if not recs:
            return [], {}
        calls, slots = _host_calls(recs, grads)
        events: list[Event] = []
        fwd, bwd = forward_culprit(calls), backward_culprit(calls)
        if fwd is not None:
            c = calls[fwd]
            events.append(Event(step, "localized", c.name, "activation", {
                "direction": "forward", "dtype": c.dtype, "nonfinite": c.out_count, "in_absmax": c.in_absmax,
                "out_absmax": c.out_absmax, **culprit_detail(calls, fwd, "forward")}))
        if bwd is not None:
            c = calls[bwd]
            events.append(Event(step, "localized", c.name, "grad", {
                "direction": "backward", "dtype": c.dtype, "nonfinite": c.grad_in_count,
                "grad_out_absmax": c.grad_out_absmax, "grad_in_absmax": c.grad_in_absmax,
                **culprit_detail(calls, bwd, "backward")}))
        events += _input_events(recs, slots, step)
        acts: dict[str, int] = {}
        for r, c in zip(recs, calls):
            if r.outs is not None:
                acts[c.name] = acts.get(c.name, 0) + c.out_count
        return events, acts


def _host_calls(recs: list[_Rec], grads: list[tuple[int, str, torch.Tensor, torch.Tensor]]
                ) -> tuple[list[Call], dict[int, list[float]]]:
    """Every device statistic of `recs` and `grads` read at once: (Calls with host numbers, the named entry
    inputs' counts per call index)."""
    tensors: list[torch.Tensor] = []
    for r in recs:
        tensors += [*(r.ins or ()), *(r.outs or ())]
        if r.slot_counts is not None:
            tensors.append(r.slot_counts)
    tensors += [x for _, _, count, amax in grads for x in (count, amax)]
    values = iter(_to_host(tensors))
    calls, slots = [], {}
    for i, r in enumerate(recs):
        ins = (next(values), next(values)) if r.ins is not None else (0.0, None)
        outs = (next(values), next(values)) if r.outs is not None else (0.0, None)
        calls.append(Call(r.name, r.kind, r.parent, r.dtype, ins[1], int(ins[0]), outs[1], int(outs[0])))
        if r.slot_counts is not None:
            slots[i] = [next(values) for _ in r.slots]
    for seq, (idx, side, _, _) in enumerate(grads):
        count, amax = next(values), next(values)
        _add_grad(calls[idx], side, int(count), amax, seq)
    return calls, slots


def _add_grad(c: Call, side: str, count: int, amax: float, seq: int) -> None:
    if side == "out":
        c.grad_out_absmax = amax if c.grad_out_absmax is None else _max(c.grad_out_absmax, amax)
        return
    c.grad_in_absmax = amax if c.grad_in_absmax is None else _max(c.grad_in_absmax, amax)
    c.grad_in_count += count
    if (count or amax != amax or amax == float("inf")) and c.grad_in_seq is None:
        c.grad_in_seq = seq


def _max(a: float, b: float) -> float:
    """max that keeps NaN (a NaN anywhere makes the side non-finite)."""
    return a if a != a else b if b != b else max(a, b)


def _input_events(recs: list[_Rec], slots: dict[int, list[float]], step: int) -> list[Event]:
    out = []
    for i, counts in slots.items():
        r = recs[i]
        for (name, shape, dtype, numel), n in zip(r.slots, counts):
            if n and len(out) < MAX_INPUT_EVENTS:
                out.append(Event(step, "nonfinite", None if r.name == OUTPUT else r.name, "input", {
                    "input": name, "shape": shape, "dtype": dtype, "nonfinite": int(n), "numel": numel}))
    return out


def _to_host(values: list[torch.Tensor]) -> list[float]:
    """Every element of `values` (0-d or 1-d), in order, with one transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        by_device.setdefault(v.device, []).append(i)
    parts: list[list[float]] = [[] for _ in values]
    for idx in by_device.values():
        host = torch.cat([values[i].float().reshape(-1) for i in idx]).cpu().tolist()
        offset = 0
        for i in idx:
            n = values[i].numel()
            parts[i] = host[offset:offset + n]
            offset += n
    return [x for p in parts for x in p]
