"""update_rounds_away: bf16 weights trained with a small lr stop changing, no NaN anywhere.

Ground truth from raw torch beside the monitor: copies of each layer's parameters before and after every
step, compared element by element; the pre-flight's from torch.finfo (not the rule's own numerics)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import monitor
from bench.lead_time import apply_fix, iterate
from monitor.diagnosis import update_rounds_away
from monitor.history import History
from tests.models import Fp16Blocks, batch

from .histories import healthy, replace_rows, run_info

BF16 = {"input_layer": "float32", "blocks.0": "bfloat16", "blocks.2": "bfloat16", "out_layer": "float32"}
STEPS = 6


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    return {"input_layer": model.input_layer, "blocks.0": model.blocks[0], "blocks.2": model.blocks[2],
            "out_layer": model.out_layer}


def train(lr: float, steps: int = STEPS, fix=None) -> tuple[list, dict[str, list[float]], dict, nn.Module]:
    """(pre-flight findings, per layer the share of elements each step left unchanged beyond its zero-
    gradient share, final findings, model); a fixed batch, so every step asks for the same direction."""
    torch.manual_seed(0)
    model = Fp16Blocks(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    runner = None if fix is None else apply_fix(fix, model, opt)  # the snippet, executed as written
    opt = opt if runner is None else runner.optimizer
    x, y = batch(0)
    excess: dict[str, list[float]] = {name: [] for name in layers_of(model)}
    with monitor.watch(model, opt, port=None) as w:
        pre = w.findings()
        for _ in range(steps):
            if runner is not None:
                iterate(runner, opt, model, (x, y), lambda m, b: observed(w, nn.functional.mse_loss(m(b[0]), b[1])))
                continue
            before = {n: [p.detach().clone() for p in m.parameters()] for n, m in layers_of(model).items()}
            opt.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            zero = {n: sum(int((p.grad == 0).sum()) for p in m.parameters()) for n, m in layers_of(model).items()}
            opt.step()
            for n, m in layers_of(model).items():
                same = sum(int((a == b).sum()) for a, b in zip(before[n], m.parameters()))
                excess[n].append((same - zero[n]) / sum(p.numel() for p in m.parameters()))
        model(x)  # under the master-weights fix the monitor reads the copied-back weights at the next forward
        found = w.findings()
    return pre, excess, found, model


def observed(w: monitor.Watcher, loss: torch.Tensor) -> torch.Tensor:
    w.observe_loss(loss)
    return loss


def half_ulp(x: float, dtype: torch.dtype) -> float:
    return 2.0 ** math.floor(math.log2(x)) * torch.finfo(dtype).eps / 2


def typical(module: nn.Module) -> float:
    """mean |w| over the module's tensors that are not all zero."""
    ps = [p.detach().float() for p in module.parameters() if p.abs().sum() > 0]
    return float(sum(p.abs().sum() for p in ps) / sum(p.numel() for p in ps))


@pytest.fixture(scope="module")
def small_lr():
    return train(1e-5)


def test_observed_names_the_layers_that_stopped_changing(small_lr) -> None:
    _, excess, found, _ = small_lr
    stuck = sorted(n for n, shares in excess.items() if min(shares) >= update_rounds_away.SHARE)
    assert stuck == ["blocks.0", "blocks.2"]  # the bf16 blocks; the fp32 layers kept moving
    assert max(excess["input_layer"]) < 0.5 and max(excess["out_layer"]) < 0.5
    top = found[0]
    assert (top.code, top.severity, top.first_step) == ("update_rounds_away", "warning", 1)
    assert sorted(top.layers) == stuck
    assert not [f for f in found if f.severity == "critical"]
    assert top.fixes[0].kind == "dtype" and "master" in top.fixes[0].snippet
    assert any('bf16_stochastic_round=True' in f.snippet for f in top.fixes)  # bf16: torchao is offered
    raised = [f for f in top.fixes if f.kind == "lr"]  # lr 1e-5 is below the resolution: the lr is the cause
    assert raised and "Raise the learning rate" in raised[0].summary


def test_preflight_compares_the_lr_with_the_weights_resolution() -> None:
    torch.manual_seed(0)
    model = Fp16Blocks(torch.bfloat16)
    halves = {n: half_ulp(typical(m), torch.bfloat16) for n, m in layers_of(model).items() if n.startswith("blocks")}
    low, high = sorted(halves.values())
    assert low < high  # the two blocks differ in resolution: an lr between them flags one
    for lr in (1e-5, math.sqrt(low * high), 1e-2):
        with monitor.watch(model, torch.optim.AdamW(model.parameters(), lr=lr), port=None) as w:
            pre = [f for f in w.findings() if f.code == "update_rounds_away"]
        expected = sorted(n for n, h in halves.items() if lr < h)
        assert (sorted(pre[0].layers) if pre else []) == expected, lr
        assert all(f.first_step == 0 for f in pre)
        info = w.info.layers
        assert info["input_layer"].typical_abs is None  # fp32: not measured
        assert info["blocks.0"].typical_abs == pytest.approx(typical(model.blocks[0]), rel=1e-3)


def test_first_fix_fp32_master_weights_makes_the_weights_move(small_lr) -> None:
    """The first fix's snippet, executed as it says: the bf16 weights now change over the run, and the
    rule is quiet; without it they stayed put."""
    _, _, found, _ = small_lr
    steps = 60  # lr 1e-5 x 60 steps of the same sign: past half an ulp of most weights
    torch.manual_seed(0)
    start = [p.detach().clone() for p in Fp16Blocks(torch.bfloat16).blocks.parameters()]
    _, _, after_fix, fixed = train(1e-5, steps, fix=found[0].fixes[0])
    _, _, _, unfixed = train(1e-5, steps)

    def moved(model: nn.Module) -> float:
        return sum(int((a != b).sum()) for a, b in zip(start, model.blocks.parameters())) / sum(
            p.numel() for p in start)

    assert moved(unfixed) < 0.1 < 0.5 < moved(fixed)
    assert "update_rounds_away" not in [f.code for f in after_fix]
    assert fixed.blocks[0].weight.dtype == torch.bfloat16  # the model still computes in bf16


def test_fp32_and_a_large_lr_stay_quiet() -> None:
    _, _, found, _ = train(1e-2)
    assert "update_rounds_away" not in [f.code for f in found]


# -- pure rule tests on hand-built histories ------------------------------------------------------

def stuck(steps: int, share: float, zero: float = 0.0, **run_kw) -> History:
    h = healthy(run_info(BF16, lr=1e-3, **run_kw), steps=steps)
    for s in range(1, steps + 1):
        replace_rows(h, s, ["blocks.0"], update_unchanged_ratio=share, zero_grad_ratio=zero)
    return h


@pytest.mark.parametrize(("steps", "share", "zero", "fires"), [
    (3, 0.5, 0.0, True), (2, 0.9, 0.0, False), (3, 0.49, 0.0, False), (5, 0.95, 0.5, False), (3, 0.95, 0.4, True)])
def test_threshold_and_sustain(steps: int, share: float, zero: float, fires: bool) -> None:
    found = update_rounds_away.rule(stuck(steps, share, zero))
    assert bool(found) == fires
    if fires:
        assert found[0].first_step == 1 and found[0].layers == ("blocks.0",)


def test_not_under_master_weights_nor_on_skipped_or_zero_lr_steps() -> None:
    assert not update_rounds_away.rule(stuck(5, 1.0, in_optimizer=False))
    h = stuck(5, 1.0)
    h.steps = [dataclasses.replace(s, lr=(0.0,)) for s in h.steps]
    assert not update_rounds_away.rule(h)
    h = stuck(5, 1.0)
    h.steps = [dataclasses.replace(s, skipped=True) for s in h.steps]
    assert not update_rounds_away.rule(h)


def test_preflight_needs_adam_and_a_typical_magnitude() -> None:
    run = run_info(BF16, lr=1e-5)
    layers = {n: dataclasses.replace(i, typical_abs=0.05 if n.startswith("blocks") else None)
              for n, i in run.layers.items()}
    found = update_rounds_away.rule(History(run=dataclasses.replace(run, layers=layers)))
    assert found and found[0].first_step == 0 and set(found[0].layers) == {"blocks.0", "blocks.2"}
    assert not update_rounds_away.rule(History(run=dataclasses.replace(run, layers=layers, optimizer="SGD")))
    assert not update_rounds_away.rule(History(run=run))  # typical |w| unknown: no prediction


def test_every_new_snippet_compiles_with_the_users_numbers() -> None:
    from monitor.diagnosis import fixes, stability_fixes

    s = fixes.setup_of(History(run=run_info(BF16, lr=3e-5)))
    built = [stability_fixes.rounding_master_fix(s), stability_fixes.stochastic_rounding_fix(s),
             stability_fixes.raise_lr_fix(s, 5e-4, "why"), stability_fixes.beta2_fix(s),
             stability_fixes.update_clipping_fix(s)]
    for fix in built:
        compile(fix.snippet, f"<{fix.kind}>", "exec")
    assert "_AdamW(model.parameters(), lr=3e-05" in built[1].snippet
    assert built[1].snippet.endswith("bf16_stochastic_round=True)")
    assert 'group["lr"] = 0.0005' in built[2].snippet and 'group["betas"] = (0.9, 0.95)' in built[3].snippet
