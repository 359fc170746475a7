"""Peak tensor memory of a training step: CUDA allocator statistics, or the torch profiler's allocator
events on the CPU (torch keeps no CPU allocator statistics).

Measured on the step's device:
- peak: the highest running total of bytes handed out minus bytes taken back during the step, i.e.
  the step's transient peak above what was live when it started (usually the forward activations:
  a monitor working after backward, when they are freed, stays under it);
- allocated: every byte handed out during the step (the extra buffers a variant makes).
Not measured: Python objects and non-torch buffers (numpy arrays of a wandb histogram, SQLite pages).
Profiling makes the steps slower, so this runs apart from timing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

__all__ = ["StepMemory", "step_memory"]

_HOST = {DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP}


@dataclass(frozen=True)
class StepMemory:
    peak_bytes: int
    allocated_bytes: int


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Kineto writes a line to fd 2 at every profiler start and stop; keep the progress line readable."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def step_memory(step: Callable[[], None], steps: int, device: torch.device) -> StepMemory:
    """The largest per-step peak and allocation (bytes, `device`'s allocator) over `steps` calls of `step`."""
    if device.type == "cuda":
        return _cuda_step_memory(step, steps)
    peaks, allocated = [], []
    for _ in range(steps):
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
                  and e.device_type() in _HOST]
        live = peak = total = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            live += e.nbytes()
            peak = max(peak, live)
            total += max(e.nbytes(), 0)
        peaks.append(peak)
        allocated.append(total)
    return StepMemory(max(peaks), max(allocated))


def _cuda_step_memory(step: Callable[[], None], steps: int) -> StepMemory:
    peaks, allocated = [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        live = torch.cuda.memory_allocated()
        total = torch.cuda.memory_stats().get("allocated_bytes.all.allocated", 0)
        step()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - live)
        allocated.append(torch.cuda.memory_stats().get("allocated_bytes.all.allocated", 0) - total)
    return StepMemory(max(peaks), max(allocated))
