"""Monitoring never changes training: bitwise-identical parameters, and no hook of ours left after close()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from .conftest import Fp16Blocks, batch, train_steps


def hook_counts(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, int]:
    mods = sum(len(getattr(m, a, None) or {}) for m in model.modules()
               for a in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    params = sum(len(getattr(p, a, None) or {}) for p in model.parameters()
                 for a in ("_backward_hooks", "_post_accumulate_grad_hooks"))
    optim = sum(len(getattr(opt, a, None) or {}) for a in (
        "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
        "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"))
    return mods, params, optim


def run(fp16: bool, watcher_factory=None, steps: int = 20, scaler: bool = False, eps: float = 1e-4):
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float16 if fp16 else torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
    sc = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaler else None
    w = watcher_factory(model, opt, scaler=sc, every=3) if watcher_factory else None
    train_steps(model, opt, steps, w, loss_mul=1.0, scaler=sc)
    return {n: p.detach().clone() for n, p in model.named_parameters()}, w


@pytest.mark.parametrize("fp16,scaler,eps", [(False, False, 1e-8), (True, False, 1e-4), (True, False, 1e-8),
                                             (False, True, 1e-8)])
def test_watched_run_is_bitwise_identical(watched, fp16, scaler, eps):
    plain, _ = run(fp16, scaler=scaler, eps=eps)
    seen, w = run(fp16, watched, scaler=scaler, eps=eps)
    assert w.counters.step == 20 and w.counters.errors == 0
    for name, p in plain.items():
        q = seen[name]
        assert p.dtype == q.dtype
        # equal_nan: the eps=1e-8 fp16 case is all NaN in both runs, at the same places
        assert torch.equal(torch.isnan(p), torch.isnan(q)), name
        assert torch.equal(torch.nan_to_num(p), torch.nan_to_num(q)), name


def test_close_removes_every_hook_and_restores_the_scaler(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    before = hook_counts(model, opt)
    assert "update" not in vars(scaler)
    w = watched(model, opt, scaler=scaler, port=0)
    assert hook_counts(model, opt) != before
    # poison a gradient so localisation hooks get armed, then close while they are live
    x, y = batch(0)
    loss = nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    model.out_layer.weight.grad[0, 0] = float("nan")
    scaler.step(opt)
    scaler.update()
    model(x)
    assert hook_counts(model, opt)[0] > before[0] + 1  # localisation forward hooks are armed
    w.close()
    w.close()  # idempotent
    assert hook_counts(model, opt) == before
    assert "update" not in vars(scaler)
    import torch.optim.optimizer as oo

    assert not oo._global_optimizer_pre_hooks and not oo._global_optimizer_post_hooks
