"""Parameters swapped or added after watch() (issue #9): detected on the next sampled step (and only on
sampled steps), the layers rebuilt, a `params_changed` event recorded, the pre-flight lint re-run - and
the numbers after the change are the new parameters' numbers (raw-torch ground truth)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import monitor
from monitor.paramwatch import ParamWatch
from tests.models import Fp16Blocks, batch


def layer_norms(module: nn.Module, attr: str) -> float:
    """Raw torch: the L2 norm over every tensor `attr` (data or grad) of `module`'s parameters."""
    ts = [getattr(p, attr).detach().double().reshape(-1) for p in module.parameters()]
    return float(torch.linalg.vector_norm(torch.cat(ts)))


def rows_at(w: monitor.Watcher, step: int) -> dict[str, object]:
    return {r.layer: r for r in w.history().layers if r.step == step}


def one_step(model: nn.Module, opt: torch.optim.Optimizer, w: monitor.Watcher, step: int,
             probe: nn.Module | None = None) -> dict[str, float]:
    """A training step; with `probe`, raw truth of that module: its grad norm before the update, its
    parameter norm after."""
    x, y = batch(step)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    w.observe_loss(loss)
    loss.backward()
    truth = {"grad": layer_norms(probe, "grad")} if probe is not None else {}
    opt.step()
    if probe is not None:
        truth["param"] = layer_norms(probe, "data")
    return truth


def test_replaced_module_and_new_param_group_are_measured_and_linted_again():
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-8)
    with monitor.watch(model, opt, port=None, run="swap") as w:
        assert [f.code for f in w.preflight] == []  # fp32: eps 1e-8 is fine
        one_step(model, opt, w, 1)
        one_step(model, opt, w, 2)
        torch.manual_seed(7)
        model.blocks[0] = nn.Linear(32, 64).half()  # swapped for an fp16 one ...
        model.blocks[2] = nn.Linear(64, 32).half()
        model.dtype = torch.float16  # (the test model's own switch: feed the blocks fp16)
        opt.add_param_group({"params": list(model.blocks.parameters())})  # ... that the optimizer trains now
        truth = one_step(model, opt, w, 3, probe=model.blocks[0])
        rows = rows_at(w, 3)
        events = [e for e in w.history().events if e.kind == "params_changed"]
        info, preflight = w.info, {f.code: f.severity for f in w.preflight}
    assert w.counters.errors == 0
    assert rows["blocks.0"].grad_norm == pytest.approx(truth["grad"], rel=1e-4)
    assert rows["blocks.0"].param_norm == pytest.approx(truth["param"], rel=1e-4)
    assert [e.step for e in events] == [3] and events[0].detail["not_in_optimizer"] == []
    assert info.layers["blocks.0"].dtype == "float16" and info.layers["blocks.0"].group == 1
    assert preflight.get("adam_eps_underflow") == "critical"  # what the new fp16 parameters brought
    assert "[master]" not in rows  # the old blocks' tensors left in group 0 are no master copy


def test_module_replaced_without_telling_the_optimizer_is_reported(caplog):
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=None, run="orphan") as w:
        one_step(model, opt, w, 1)
        model.out_layer = nn.Linear(32, 1)
        with caplog.at_level(logging.WARNING, logger="monitor"):
            truth = one_step(model, opt, w, 2, probe=model.out_layer)
        rows = rows_at(w, 2)
    event = next(e for e in w.history().events if e.kind == "params_changed")
    assert event.step == 2 and event.detail["not_in_optimizer"] == ["out_layer"]
    assert any("out_layer" in r.getMessage() and "will not train" in r.getMessage() for r in caplog.records)
    assert rows["out_layer"].grad_norm == pytest.approx(truth["grad"], rel=1e-6)
    assert rows["out_layer"].param_norm == pytest.approx(truth["param"], rel=1e-6)
    assert rows["out_layer"].update_ratio == 0.0  # the optimizer never touches it: raw truth, unchanged


@pytest.mark.parametrize("change", ["replace_param", "replace_module", "add_module", "add_param",
                                    "half", "add_param_group", "swap_in_group"])
def test_every_kind_of_change_is_detected(change):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = ParamWatch(model, opt)
    x, y = batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # training in place is no change
    model.zero_grad()
    assert not seen.changed()
    if change == "replace_param":
        model.out_layer.bias = nn.Parameter(torch.zeros(1))
    elif change == "replace_module":
        model.blocks[1] = nn.Tanh()  # no parameters of its own: still a different module tree
    elif change == "add_module":
        model.extra = nn.Linear(2, 2)
    elif change == "add_param":
        model.out_layer.register_parameter("scale", nn.Parameter(torch.ones(1)))
    elif change == "half":
        model.blocks.half()  # same Parameter objects, new dtype
    elif change == "add_param_group":
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))]})
    else:
        opt.param_groups[0]["params"][0] = nn.Parameter(torch.ones(2))
    assert seen.changed()


def test_the_check_runs_on_sampled_steps_only(monkeypatch):
    calls: list[int] = []
    real = ParamWatch.changed
    monkeypatch.setattr(ParamWatch, "changed", lambda self: (calls.append(1), real(self))[1])
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=None, run="cost", every=3) as w:
        for step in range(1, 7):
            one_step(model, opt, w, step)
    assert len(calls) == 2 and w.counters.step == 6  # steps 1 and 4
