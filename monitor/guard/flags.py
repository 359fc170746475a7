"""Device-side "is anything non-finite?" flags for the guard, agreed across ranks.

A flag is a float32 tensor of shape [] on the tensors' device: 1.0 when any element of the checked
tensors is NaN/Inf, else 0.0. Computing it needs no host sync (fused `_foreach_norm`, grouped by
device and dtype); reading it on the host (`read`) is one sync. `agree` makes every rank see the
same flag: one all-reduce (MAX) of one element, only when torch.distributed is initialised.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

__all__ = ["DeferredFlag", "agree", "nonfinite_flag", "read"]

_LOW = (torch.float16, torch.bfloat16)


def nonfinite_flag(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """1.0 where any tensor holds a non-finite element (0.0 on `device` for no floating tensors).

    The test is the finiteness of the fp32 L2 norm (one fused kernel per device and dtype; 16-bit
    tensors are reduced in fp32, so a large finite fp16 tensor never reads as inf). It also flags
    elements beyond ~1.8e19, whose squares overflow fp32: gradients that would turn Adam's
    exp_avg_sq into inf, and state that has all but overflowed."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        if t.is_floating_point() or t.is_complex():
            groups[(t.device, t.dtype)].append(t.detach())
    totals = []
    for (_, dtype), ts in groups.items():
        norms = torch._foreach_norm(ts, 2, dtype=torch.float32 if dtype in _LOW else None)
        totals.append(torch.stack([n.float() for n in norms]).sum())
    if not totals:
        return torch.zeros((), device=device)
    total = torch.stack([t.to(device, non_blocking=True) for t in totals]).sum()
    return (~torch.isfinite(total)).float()


def agree(flag: torch.Tensor) -> torch.Tensor:
    """The flag as every rank sees it: any rank's 1.0 makes it 1.0 everywhere (in place, async on the
    device with NCCL). A no-op in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def read(flag: torch.Tensor | None) -> bool:
    """The flag on the host (one sync when it lives on an accelerator)."""
    return flag is not None and bool(flag.item())


class DeferredFlag:
    """A flag read one step later, so the training thread never waits for it: on CUDA the value is
    copied into pinned memory behind an event, and `value()` waits only for that event (long done by
    the next step); on CPU it is read directly."""

    def __init__(self, step: int, flag: torch.Tensor) -> None:
        self.step = step
        self._flag, self._event = flag, None
        if flag.device.type == "cuda":
            self._flag = torch.empty((), dtype=flag.dtype, pin_memory=True)
            self._flag.copy_(flag, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()

    def value(self) -> bool:
        if self._event is not None:
            self._event.synchronize()
        return bool(self._flag.item())
