"""Short training runs for the safety tests: the same loop watched and unwatched, compared bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import monitor
from tests.models import Fp16Blocks, backward_step, batch

STEPS = 4
NAN_STEP = 2  # `nan_at`: the batch of this step holds a NaN (arms localisation for the next iteration)

Between = Callable[[nn.Module, torch.optim.Optimizer, int], None]


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = STEPS, *, scaler: Any = None,
          watcher: Any = None, nan_at: int | None = None, between: Between | None = None) -> list[float]:
    """A plain loop (MSE, optional GradScaler); `between(model, opt, step)` runs after each step."""
    losses = []
    for step in range(1, steps + 1):
        x, y = batch(step)
        if step == nan_at:
            x = x.clone()
            x[0, 0] = float("nan")
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        if watcher is not None:
            watcher.observe_loss(loss)
        backward_step(loss, opt, scaler)
        losses.append(float(loss.detach()))
        if between is not None:
            between(model, opt, step)
    return losses


def setup(dtype: torch.dtype = torch.float32, eps: float = 1e-8, scaler: bool = False
          ) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = Fp16Blocks(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
    return model, opt, torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaler else None


def final_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Parameters and every optimizer state tensor, copied."""
    out = {f"param/{n}": p.detach().clone() for n, p in model.named_parameters()}
    for i, state in enumerate(opt.state.values()):
        out.update({f"state/{i}/{k}": v.detach().clone() for k, v in state.items() if isinstance(v, torch.Tensor)})
    return out


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit for bit, NaNs at the same places."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(torch.isnan(a[k]), torch.isnan(b[k])), k
        assert torch.equal(torch.nan_to_num(a[k]), torch.nan_to_num(b[k])), k


def watched_and_plain(watch_kwargs: dict[str, Any] | None = None, *, dtype: torch.dtype = torch.float32,
                      scaler: bool = False, nan_at: int | None = None, between: Between | None = None,
                      steps: int = STEPS) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], monitor.Watcher]:
    """(unwatched final state, watched final state, the closed watcher) of the same run."""
    model, opt, sc = setup(dtype, scaler=scaler)
    plain_losses = train(model, opt, steps, scaler=sc, nan_at=nan_at, between=between)
    plain = final_state(model, opt)
    model, opt, sc = setup(dtype, scaler=scaler)
    kw = {"port": None, "run": "safety", "scaler": sc, **(watch_kwargs or {})}
    with monitor.watch(model, opt, **kw) as w:
        seen_losses = train(model, opt, steps, scaler=sc, watcher=w, nan_at=nan_at, between=between)
    plain["losses"] = torch.tensor(plain_losses, dtype=torch.float64)
    seen = final_state(model, opt)
    seen["losses"] = torch.tensor(seen_losses, dtype=torch.float64)
    return plain, seen, w
