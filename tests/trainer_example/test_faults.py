"""Each fault produces its own signature at the expected step (k = fault_step = 3)."""

from __future__ import annotations

import math

import pytest
import torch

from monitor.example.data import SyntheticVoxels
from monitor.example.faults import OVERFLOW_LOGIT_GAIN, FaultPlan
from monitor.example.loop import resolve_precision, run
from monitor.example.model import SlatVAE

from .helpers import FIXED_BATCH, tiny

K = 3


def test_auto_precision_per_fault() -> None:
    expected = {
        "none": "inflat_all",
        "eps-underflow": "fp16-naive",
        "overflow": "fp16-naive",
        "loss-nan": "inflat_all",
        "lr-spike": "fp32",
        "underflow": "fp16-naive",
    }
    assert {f: resolve_precision(tiny(fault=f)) for f in expected} == expected


def test_overflow_without_scaler() -> None:
    steps = run(tiny(fault="overflow", steps=K + 1)).steps
    assert all(s.output_finite and s.grads_finite and not s.nonfinite_params for s in steps[: K - 1])
    hit = steps[K - 1]
    assert not hit.output_finite and not math.isfinite(hit.loss) and hit.grads_finite is False
    assert hit.nonfinite_params and not hit.skipped  # no scaler: the update takes the NaNs in


def test_overflow_first_nonfinite_activation_is_attention_core() -> None:
    """Forward hooks in module order: the first module whose output is non-finite; its input (qkv) was
    finite and it has no child, so the logits overflow in its own code (the localiser's culprit)."""
    model = SlatVAE(FIXED_BATCH)
    model.convert_to_fp16(upsample=False)
    model.attention_cores()[0].logit_gain = OVERFLOW_LOGIT_GAIN
    order: list[str] = []
    inputs_finite: dict[str, bool] = {}

    def hook(name: str):
        def fn(_m, args, out):
            if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
                order.append(name)
                inputs_finite[name] = all(bool(torch.isfinite(a).all()) for a in args
                                          if isinstance(a, torch.Tensor) and a.is_floating_point())

        return fn

    for name, module in model.named_modules():
        module.register_forward_hook(hook(name))
    model(SyntheticVoxels(FIXED_BATCH, 0, torch.device("cpu")).batch(0).x)
    assert order and order[0] == "encoder.blocks.0.attn.core"
    assert inputs_finite[order[0]] and not list(model.get_submodule(order[0]).children())


def test_overflow_under_inflat_all_collapses_the_loss_scale() -> None:
    steps = run(tiny(fault="overflow", precision="inflat_all", steps=K + 2)).steps
    assert [s.skipped for s in steps] == [False] * (K - 1) + [True] * 3
    scales = [s.loss_scale for s in steps[K - 1 :]]
    assert scales[1] == pytest.approx(scales[0] / 2) and scales[2] == pytest.approx(scales[0] / 4)
    assert all(not s.nonfinite_params for s in steps)


def test_overflow_is_harmless_in_fp32() -> None:
    steps = run(tiny(fault="overflow", precision="fp32", steps=K)).steps
    assert all(s.output_finite and math.isfinite(s.loss) for s in steps)


def test_loss_nan_skips_one_step_under_inflat_all() -> None:
    steps = run(tiny(fault="loss-nan", steps=K + 1)).steps
    hit, after = steps[K - 1], steps[K]
    assert all(math.isfinite(s.loss) and not s.skipped for s in steps[: K - 1])
    assert math.isnan(hit.loss) and hit.output_finite and hit.grads_finite is False and hit.skipped
    assert math.isfinite(after.loss) and not after.skipped
    assert after.loss_scale == pytest.approx(hit.loss_scale / 2)
    assert all(not s.nonfinite_params for s in steps)


def test_lr_spike_multiplies_lr_and_update_ratio() -> None:
    steps = run(tiny(fault="lr-spike", steps=K)).steps
    assert [s.lr for s in steps] == [1e-4] * (K - 1) + [0.1]
    before = max(s.update_ratio for s in steps[: K - 1])
    assert before < 1e-2
    assert steps[K - 1].update_ratio > 100 * before


def test_underflow_zeroes_fp16_grads_not_fp32() -> None:
    result = run(tiny(fault="underflow", steps=K))
    steps = result.steps
    assert steps[K - 2].fp16_zero_grad_ratio < 0.5
    assert steps[K - 1].fp16_zero_grad_ratio > 0.95
    assert steps[K - 1].loss < 1e-6 and all(not s.nonfinite_params for s in steps)
    head = result.model.decoder.out_layer.weight.grad  # the last step's gradients
    assert head is not None and head.dtype == torch.float32 and (head != 0).float().mean() > 0.5


def test_fault_plan_validates() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan("nan-everywhere", 3)
    with pytest.raises(ValueError, match="from 1"):
        FaultPlan("overflow", 0)
    plan = FaultPlan("loss-nan", 4)
    assert [plan.empty_target(s) for s in (3, 4, 5)] == [False, True, False]
