"""Loss scaling: skipped steps are counted although optimizer.step() never runs on them."""

from __future__ import annotations

import torch
from torch import nn

from .conftest import Fp16Blocks, batch
from .matrix import copy_master_back


def scaler_step(model, opt, scaler, w, i, poison: bool = False) -> None:
    x, y = batch(i)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    w.observe_loss(loss)
    scaler.scale(loss).backward()
    if poison:
        model.out_layer.weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()


def test_injected_inf_skips_exactly_one_step_and_halves_the_scale(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    w = watched(model, opt, scaler=scaler)
    for i in range(3):
        scaler_step(model, opt, scaler, w, i)
    before_skipped, before_scale = w.counters.skipped_steps, w.counters.loss_scale
    assert before_skipped == 0 and before_scale == 2.0**16

    scaler_step(model, opt, scaler, w, 3, poison=True)
    assert w.counters.skipped_steps == before_skipped + 1
    assert w.counters.loss_scale == before_scale / 2
    scaler_step(model, opt, scaler, w, 4)
    assert w.counters.skipped_steps == 1
    h = w.history()
    assert [s.step for s in h.steps if s.skipped] == [4]
    assert h.steps[-1].step == 5 and not h.steps[-1].skipped


def test_custom_loss_scale_with_fp32_master_copy_counts_drops_as_skips(watched):
    """TRELLIS inflat_all: one flattened fp32 master param, hand-made 2**log_scale."""
    torch.manual_seed(0)
    model = Fp16Blocks()
    params = list(model.parameters())
    master = nn.Parameter(torch.cat([p.detach().float().reshape(-1) for p in params]))
    opt = torch.optim.AdamW([master], lr=1e-4)
    state = {"log_scale": 20.0}
    skipped = []
    w = watched(model, opt, loss_scale=lambda: 2 ** state["log_scale"])
    for i in range(6):
        x, y = batch(i)
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        w.observe_loss(loss)
        (loss * 2 ** state["log_scale"]).backward()
        master.grad = torch.cat([p.grad.float().reshape(-1) for p in params])
        if i in (2, 3) or not torch.isfinite(master.grad).all():
            state["log_scale"] -= 1  # skip: TRELLIS halves the scale instead of stepping
            skipped.append(i + 1)
            continue
        master.grad.mul_(2 ** -state["log_scale"])
        opt.step()
        copy_master_back(master, params)
        state["log_scale"] += 1e-3
    model(batch(0)[0])  # the next forward reveals the last skip and finishes the deferred sample
    h = w.history()
    assert 3 in skipped and 4 in skipped, skipped
    assert w.counters.skipped_steps == len(skipped)
    assert [s.step for s in h.steps if s.skipped] == skipped
    assert h.run.master_weights and h.run.scaler == "custom"
    assert not h.run.layers["blocks.0"].in_optimizer
    rows = {r.layer: r for r in h.layer_rows(1)}
    assert "[master]" in rows and rows["[master]"].state_zero_ratio is not None
    # model grads carry 2**20: the exported norm is unscaled, i.e. of the order of the fp32 reference
    assert 1e-4 < rows["out_layer"].grad_norm < 10
    assert h.steps[0].loss_scale == 2.0**20
