"""Peak tensor memory of a training step, from the torch profiler's allocator events.

Measured, from the allocator events of the step's device (CPU, or the CUDA device):
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
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    peaks, allocated = [], []
    for _ in range(steps):
        with _quiet_stderr(), profile(activities=activities, profile_memory=True) as prof:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
                  and (e.device_type() in _HOST) == (device.type == "cpu")]
        live = peak = total = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            live += e.nbytes()
            peak = max(peak, live)
            total += max(e.nbytes(), 0)
        peaks.append(peak)
        allocated.append(total)
    return StepMemory(max(peaks), max(allocated))
