"""The undo copy: the optimizer's parameters and state before a step, restored bit for bit.

Needed only where a step with finite gradients can still write non-finite values: 16-bit
parameters or optimizer state (TRELLIS #162: fp16 AdamW state, eps 1e-8 rounds to 0, the update
divides by 0). With fp32/fp64 parameters and state, finite gradients whose fp32 squared norm is
finite give finite Adam/SGD updates, and the gradient check alone decides (no copy).

Cost while guarding: one copy of every parameter that has a gradient plus its optimizer state
(Adam: 3x the parameters' bytes), kept between steps and reused; one fused copy kernel per
(device, dtype) group before each step, one fused check after it. Restoring writes into the very
tensor objects the optimizer holds (fused/capturable optimizers and state_dict() keep working).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["UndoCopy", "needs_copy"]

_LOW = (torch.float16, torch.bfloat16)


def needs_copy(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter or optimizer state tensor of `optimizer` is 16-bit floating point."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if any(p.dtype in _LOW for p in params):
        return True
    return any(isinstance(v, torch.Tensor) and v.dtype in _LOW
               for p in params for v in optimizer.state.get(p, {}).values())


@dataclass
class _Entry:
    """One parameter's saved optimizer state: `tensors` are the optimizer's own objects (copied into
    the buffers), `others` deep copies of non-tensor values; `state is None`: no state yet."""

    param: torch.Tensor
    state: dict[str, Any] | None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)


class UndoCopy:
    """`save()` before `optimizer.step()`, then `restore()` (undo) or nothing (keep the update)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._entries: list[_Entry] = []
        self._sources: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._signature: list[tuple[Any, ...]] = []

    @property
    def nbytes(self) -> int:
        """Memory held by the copy (after the first `save()`)."""
        return sum(b.numel() * b.element_size() for b in self._buffers)

    def save(self) -> None:
        """Copy every parameter that has a gradient (the ones step() will touch) and its state."""
        entries, sources = [], []
        for g in self.optimizer.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                state = self.optimizer.state.get(p)
                e = _Entry(p, state or None)
                sources.append(p.detach())
                for k, v in (state or {}).items():
                    if isinstance(v, torch.Tensor):
                        e.tensors[k] = v
                        sources.append(v.detach())
                    else:
                        e.others[k] = copy.deepcopy(v)
                entries.append(e)
        self._entries, self._sources = entries, sources
        self._ensure_buffers()
        if sources:
            torch._foreach_copy_(self._buffers, sources)

    def touched(self) -> list[torch.Tensor]:
        """After step(): the parameters saved and every tensor now in their state (including state
        the step created), the tensors to check for non-finite values."""
        out = []
        for e in self._entries:
            out.append(e.param)
            out += [v for v in self.optimizer.state.get(e.param, {}).values() if isinstance(v, torch.Tensor)]
        return out

    def restore(self) -> None:
        """Put back the values from `save()` exactly: parameters and state tensors in place; state the
        step created is removed; replaced or added state keys are reset."""
        if self._sources:
            with torch.no_grad():
                torch._foreach_copy_(self._sources, self._buffers)
        for e in self._entries:
            if e.state is None:
                self.optimizer.state.pop(e.param, None)
                continue
            now = self.optimizer.state[e.param]
            for k in [k for k in now if k not in e.tensors and k not in e.others]:
                del now[k]
            now.update(e.tensors)
            now.update({k: copy.deepcopy(v) for k, v in e.others.items()})

    def _ensure_buffers(self) -> None:
        """Reuse the buffers while shapes/dtypes/devices match (no allocation per step)."""
        sig = [(t.shape, t.dtype, t.device) for t in self._sources]
        if sig != self._signature:
            self._buffers = [torch.empty_like(t, memory_format=torch.preserve_format) for t in self._sources]
            self._signature = sig
