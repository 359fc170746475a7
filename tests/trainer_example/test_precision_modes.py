"""Every precision mode trains the tiny config on the CPU with a finite, decreasing loss (no fault)."""

from __future__ import annotations

import math

import pytest
import torch

from monitor.example.config import PRECISIONS
from monitor.example.loop import run
from monitor.example.precision import InflatAllPrecision

from .helpers import tiny


@pytest.mark.parametrize("precision", PRECISIONS)
def test_trains_with_finite_decreasing_loss(precision: str) -> None:
    result = run(tiny(precision=precision, steps=5, lr=1e-3))
    losses = result.losses
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses
    assert all(not s.nonfinite_params for s in result.steps)
    clean = [s for s in result.steps if not s.skipped]
    assert len(clean) >= 4  # amp may skip step 1 while GradScaler finds its scale; nothing else


def test_fp16_modes_keep_fp32_layers_and_fp16_blocks() -> None:
    result = run(tiny(precision="fp16-naive", steps=1))
    dtypes = {n: p.dtype for n, p in result.model.named_parameters()}
    assert dtypes["encoder.blocks.0.attn.to_qkv.weight"] == torch.float16
    assert dtypes["encoder.input_layer.weight"] == torch.float32
    assert dtypes["decoder.out_layer.weight"] == torch.float32
    state = result.optimizer.state[result.model.encoder.blocks[0].attn.to_qkv.weight]
    assert state["exp_avg_sq"].dtype == torch.float16  # AdamW straight on fp16 params: fp16 state


def test_inflat_all_has_one_flat_fp32_master_and_grows_its_scale() -> None:
    result = run(tiny(precision="inflat_all", steps=3))
    groups = result.optimizer.param_groups
    assert len(groups) == 1 and len(groups[0]["params"]) == 1
    master = groups[0]["params"][0]
    assert master.dtype == torch.float32 and master.dim() == 1
    assert master.numel() == sum(p.numel() for p in result.model.parameters())
    scales = [s.loss_scale for s in result.steps]
    assert scales[0] == 2.0**20
    assert all(not s.skipped for s in result.steps)
    assert scales[1] == pytest.approx(2.0 ** (20 + 1e-3)) and scales[2] == pytest.approx(2.0 ** (20 + 2e-3))
    # The model copy equals the master copy (converted to each parameter's dtype).
    first = next(result.model.parameters())
    assert torch.equal(first.detach().reshape(-1), master.detach()[: first.numel()].to(first.dtype))


def test_inflat_all_skips_and_lowers_log_scale_on_overflow() -> None:
    model = torch.nn.Linear(2, 2)
    prec = InflatAllPrecision(model, lr=1e-4, eps=1e-8, amsgrad=False, clip=None)  # type: ignore[arg-type]
    prec.zero_grad()
    prec.backward(model(torch.tensor([[float("inf"), 0.0]])).sum())
    before = prec.master.detach().clone()
    assert prec.apply() is True
    assert prec.log_scale == 19.0
    assert torch.equal(prec.master.detach(), before)


def test_amp_uses_grad_scaler_and_fp32_weights() -> None:
    result = run(tiny(precision="amp", steps=2))
    assert isinstance(result.scaler, torch.amp.GradScaler)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
