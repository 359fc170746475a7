"""No host sync on unsampled steps: counted on the CPU, enforced by CUDA's sync debug mode on a GPU.

CPU: every host read of the monitor's statistics goes through monitor.probes (`host_reads()`), and
`.item()` / `float(tensor)` anywhere dispatch `aten._local_scalar_dense`, which a TorchDispatchMode
sees. Neither may happen inside the optimizer step of an unsampled step, nor in the forward/backward
of an unsampled iteration. GPU: `torch.cuda.set_sync_debug_mode("error")` around unsampled steps
raises on any synchronising call (bench/gpu.sh runs this file on a CUDA machine).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import monitor
from monitor.probes import host_reads

EVERY = 5


class ScalarReads(TorchDispatchMode):
    """Counts host reads of tensor values (`.item()`, `float()`, `bool()` on a tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _setup(device: str) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    return model, opt, torch.randn(8, 16, device=device)


def _iteration(model: nn.Module, opt: torch.optim.Optimizer, w: monitor.Watcher, x: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = model(x).pow(2).mean()
    w.observe_loss(loss)
    loss.backward()
    opt.step()


def _scalar_reads(model: nn.Module, opt: torch.optim.Optimizer, w: monitor.Watcher | None,
                  x: torch.Tensor) -> tuple[int, int]:
    before = host_reads()
    with ScalarReads() as scalars:
        if w is None:
            opt.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            opt.step()
        else:
            _iteration(model, opt, w, x)
    return host_reads() - before, scalars.count


def test_unsampled_steps_read_nothing_on_the_host():
    """The optimizer itself reads its step counters with .item() on the CPU: an unwatched twin,
    trained alongside, gives the count a step makes without the monitor."""
    model, opt, x = _setup("cpu")
    twin, twin_opt, _ = _setup("cpu")
    sampled = [s for s in range(1, 3 * EVERY + 1) if (s - 1) % EVERY == 0]
    with monitor.watch(model, opt, every=EVERY, port=None) as w:
        for step in range(1, 3 * EVERY + 1):
            reads, scalars = _scalar_reads(model, opt, w, x)
            _, unwatched_scalars = _scalar_reads(twin, twin_opt, None, x)
            if step in sampled:
                assert reads >= 1, f"sampled step {step} made no host read: the counter is not wired"
            else:
                assert (reads, scalars) == (0, unwatched_scalars), f"unsampled step {step}"
        assert [s.step for s in w.history().steps if s.sampled] == sampled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu.sh runs it on a GPU)")
def test_unsampled_steps_do_not_synchronise_the_gpu():
    model, opt, x = _setup("cuda")
    with monitor.watch(model, opt, every=EVERY, port=None) as w:
        for step in range(1, 3 * EVERY + 1):
            sampled = (step - 1) % EVERY == 0
            torch.cuda.set_sync_debug_mode(0 if sampled else "error")
            try:
                _iteration(model, opt, w, x)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        assert sum(s.sampled for s in w.history().steps) == 3
