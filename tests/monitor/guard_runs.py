"""Training loops for the guard tests: the same loop with and without the monitor, ground truth from raw torch.

`fp32_run` trains a small fp32 MLP on batches 1..steps; `nan_at` makes that batch's input NaN,
`drop` leaves batches out entirely (the run that "never saw" them). Also used by the 2-rank test's
worker processes, so nothing here depends on pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

import monitor


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 1))


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(32, 16, generator=g), torch.randn(32, 1, generator=g)


def fp32_run(steps: int, *, nan_at: Iterable[int] = (), drop: Iterable[int] = (), fused: bool = False,
             watch: dict[str, Any] | None = None,
             on_step: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None
             ) -> tuple[nn.Module, torch.optim.Optimizer, monitor.Watcher | None]:
    """Train `mlp()` with AdamW; `watch`: monitor.watch keyword arguments (None: unwatched).
    Returns (model, optimizer, the closed watcher or None)."""
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused or None)
    w = monitor.watch(model, opt, port=None, run="guard", **watch) if watch is not None else None
    nan_at, drop = set(nan_at), set(drop)
    try:
        for step in range(1, steps + 1):
            if step in drop:
                continue
            x, y = data(step)
            if step in nan_at:
                x = torch.full_like(x, float("nan"))
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            if w is not None:
                w.observe_loss(loss)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(step, model, opt)
    finally:
        if w is not None:
            w.close()
    return model, opt, w


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    """Bitwise equal optimizer state (every tensor, every key), parameters matched by position."""
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    for p, q in zip(pa, pb, strict=True):
        sa, sb = a.state.get(p, {}), b.state.get(q, {})
        if set(sa) != set(sb):
            return False
        for k in sa:
            va, vb = sa[k], sb[k]
            if isinstance(va, torch.Tensor):
                if not (va.dtype == vb.dtype and torch.equal(va, vb)):
                    return False
            elif va != vb:
                return False
    return True


def bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
