"""monitor.localize: replay one batch and name the first non-finite module, without touching .grad."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import monitor

from .conftest import Fp16Blocks, batch


class Blowup(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.half() * 1e6).to(x.dtype)  # past fp16's 65504


def test_localize_names_the_overflowing_module_and_keeps_grads():
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    model.blocks.insert(2, Blowup())
    x, y = batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    before = {n: (p.grad, p.grad.clone()) for n, p in model.named_parameters()}
    events = monitor.localize(model, lambda m: nn.functional.mse_loss(m(x), y))
    fwd = [e for e in events if e.detail["direction"] == "forward"]
    assert fwd[0].layer == "blocks.2" and fwd[0].detail["out_absmax"] == float("inf")
    # every gradient is non-finite only because the forward pass was: no module's backward made it
    assert not any(e.detail["direction"] == "backward" for e in events)
    for n, p in model.named_parameters():
        assert p.grad is before[n][0]
        assert torch.equal(p.grad.nan_to_num(), before[n][1].nan_to_num()), n
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_localize_healthy_batch_finds_nothing():
    model = Fp16Blocks(torch.float32)
    x, y = batch(0)
    assert monitor.localize(model, lambda m: nn.functional.mse_loss(m(x), y)) == []


def test_localize_bad_arguments():
    with pytest.raises(monitor.ConfigError, match="run_batch must be a callable"):
        monitor.localize(Fp16Blocks(torch.float32), "batch")
