"""Training set-ups the watcher must follow: accumulation, frozen/unused params, sampling, localisation."""

from __future__ import annotations

import torch
from torch import nn

import monitor

from .conftest import Fp16Blocks, batch, train_steps


def test_gradient_accumulation_samples_once_per_optimizer_step(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = watched(model, opt)
    for step in range(3):
        opt.zero_grad()
        for micro in range(4):
            x, y = batch(step * 4 + micro)
            loss = nn.functional.mse_loss(model(x), y) / 4
            w.observe_loss(loss)
            loss.backward()
        opt.step()
    h = w.history()
    assert [s.step for s in h.steps] == [1, 2, 3]
    assert all(s.sampled and s.grad_norm_total > 0 for s in h.steps)


def test_frozen_and_unused_parameters(watched):
    model = Fp16Blocks(torch.float32)
    model.input_layer.requires_grad_(False)
    unused = nn.Linear(3, 3)
    model.add_module("unused", unused)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    w = watched(model, opt)
    train_steps(model, opt, 2, w)
    rows = {r.layer: r for r in w.history().layer_rows(2)}
    assert rows["input_layer"].grad_norm is None and rows["input_layer"].param_norm > 0
    assert rows["unused"].grad_norm is None and rows["unused"].zero_grad_ratio is None
    assert rows["out_layer"].grad_norm > 0 and 0 < rows["out_layer"].update_ratio < 1
    assert not w.info.layers["input_layer"].trainable
    assert w.counters.errors == 0


def test_every_n_samples_steps_1_n_plus_1(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    w = watched(model, opt, every=4)
    train_steps(model, opt, 10, w)
    assert [s.step for s in w.history().sampled_steps()] == [1, 5, 9]
    assert w.counters.step == 10


class Overflows(nn.Module):
    """An fp16 computation whose output overflows past 65504 on its second and third calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (x.half() * 1e5).to(x.dtype) if self.calls in (2, 3) else x


def test_localisation_names_the_first_module_with_a_nonfinite_output(watched):
    model = Fp16Blocks(torch.float32)
    model.blocks.insert(1, Overflows())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    w = watched(model, opt, scaler=scaler)
    permanent = sum(len(m._forward_hooks) for m in model.modules())
    train_steps(model, opt, 4, w, scaler=scaler)
    h = w.history()
    assert [s.step for s in h.steps if s.skipped] == [2, 3]
    loc = [e for e in h.events if e.kind == "localized"]
    fwd = [e for e in loc if e.detail["direction"] == "forward"]
    assert fwd and fwd[0].layer == "blocks.1" and fwd[0].detail["out_absmax"] == float("inf")
    assert fwd[0].step == 3  # the step the scaler skipped at step 2 armed the hooks for step 3
    assert not any(e.detail["direction"] == "backward" for e in loc)  # its gradients follow from the forward
    assert any(r.activation_nonfinite for r in h.layers if r.layer == "blocks.1")
    assert w.counters.nonfinite_steps["activation"] == 1
    # localisation hooks are gone again after the armed iteration
    assert sum(len(m._forward_hooks) for m in model.modules()) == permanent


def test_load_state_dict_relints(watched):
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)
    w = watched(model, opt)
    sd = opt.state_dict()
    sd["param_groups"][0]["eps"] = 1e-8
    opt.load_state_dict(sd)
    assert w.info.groups[0].eps == 1e-8
    assert any(f.code == "adam_eps_underflow" for f in w.findings())


def test_kill_switch(monkeypatch):
    monkeypatch.setenv("SLATMON_DISABLE", "1")
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, opt, port=0) as w:
        train_steps(model, opt, 2, w)
        assert w.url is None and w.findings() == []
    assert not opt._optimizer_step_pre_hooks
