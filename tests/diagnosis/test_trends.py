"""grad_explosion, lr_too_high, grad_underflow: thresholds and their edges."""

from __future__ import annotations

import math

import pytest

from monitor.diagnosis import grad_explosion, grad_underflow, lr_too_high

from .histories import FP16_BLOCKS, FP32_MODEL, healthy, replace_rows, replace_step, run_info


def flat_norms(steps: int = 30):
    h = healthy(run_info(FP32_MODEL), steps=steps)
    for s in range(1, steps + 1):
        replace_step(h, s, grad_norm_total=1.0)
    return h


# -- grad_explosion ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("ratio", "expected"), [(9.99, None), (10.0, "warning"), (99.0, "warning"),
                                                 (100.0, "critical")])
def test_spike_thresholds(ratio: float, expected: str | None) -> None:
    h = flat_norms()
    replace_step(h, 20, grad_norm_total=ratio)
    found = grad_explosion.rule(h)
    assert (found[0].severity if found else None) == expected
    if found:
        assert found[0].first_step == 20 and f"{ratio:.1f}x" in found[0].evidence[0]


def test_spike_followed_by_divergence_is_critical() -> None:
    h = flat_norms()
    replace_step(h, 20, grad_norm_total=20.0)
    replace_step(h, 25, loss=math.nan)
    [f] = grad_explosion.rule(h)
    assert f.severity == "critical" and any("step 25" in e for e in f.evidence)
    assert [x.kind for x in f.fixes] == ["clip", "lr", "warmup"]
    assert "max_norm=2.0" in f.fixes[0].snippet


def test_sustained_spike_is_critical() -> None:
    h = flat_norms()
    for s in (20, 21):
        replace_step(h, s, grad_norm_total=20.0)
    assert grad_explosion.rule(h)[0].severity == "warning"  # two steps: not yet sustained
    replace_step(h, 22, grad_norm_total=20.0)
    assert grad_explosion.rule(h)[0].severity == "critical"


def test_needs_history_and_ignores_nonfinite_norms() -> None:
    h = flat_norms()
    replace_step(h, 5, grad_norm_total=1e6)  # only 4 norms before it
    replace_step(h, 12, grad_norm_total=math.inf)
    assert grad_explosion.rule(h) == []


def test_clip_snippet_unscales_with_a_scaler() -> None:
    h = flat_norms()
    h.run = run_info(FP32_MODEL, scaler="grad_scaler")
    replace_step(h, 20, grad_norm_total=500.0)
    clip = grad_explosion.rule(h)[0].fixes[0]
    # clipped in a step pre-hook: scaler.step() has unscaled the gradients by then
    assert "register_step_pre_hook" in clip.snippet and "after GradScaler's unscale" in clip.summary


# -- lr_too_high ------------------------------------------------------------------------------------

def hot(ratio: float, steps: list[int], **kw: object):
    h = healthy(run_info(FP32_MODEL, **kw), steps=30)
    for s in steps:
        replace_rows(h, s, None, update_ratio=ratio)
    return h


def test_lr_thresholds() -> None:
    assert lr_too_high.rule(hot(0.1, list(range(10, 15))))[0].severity == "critical"
    assert lr_too_high.rule(hot(0.1, list(range(10, 14)))) == []  # 4 steps: not sustained
    assert lr_too_high.rule(hot(0.03, list(range(10, 15))))[0].severity == "warning"
    assert lr_too_high.rule(hot(0.029, list(range(10, 30)))) == []


def test_lr_fix_scales_the_users_lr() -> None:
    h = hot(1.0, list(range(10, 30)), lr=0.1)
    [f] = lr_too_high.rule(h)
    assert f.first_step == 10
    assert f.fixes[0].kind == "lr" and 'min(group["lr"], 0.0001)' in f.fixes[0].snippet  # 0.1 * 1e-3 / 1.0


def test_lr_spike_is_named() -> None:
    h = hot(1.0, list(range(10, 30)))
    for s in range(10, 31):
        replace_step(h, s, lr=(0.1,))
    [f] = lr_too_high.rule(h)
    assert any("lr rose from 0.0001 to 0.1" in e for e in f.evidence)


def test_one_hot_layer_does_not_move_the_median() -> None:
    h = healthy(run_info(FP32_MODEL), steps=30)
    for s in range(1, 31):
        replace_rows(h, s, ["out_layer"], update_ratio=5.0)  # e.g. a zero-initialised head
    assert lr_too_high.rule(h) == []


# -- grad_underflow ---------------------------------------------------------------------------------

def zeros(share: float, steps: list[int], scaler: str = "none", fp32_share: float = 0.0):
    h = healthy(run_info(FP16_BLOCKS, eps=1e-4, scaler=scaler), steps=20)
    for s in steps:
        replace_rows(h, s, ["blocks.0", "blocks.1"], zero_grad_ratio=share)
        replace_rows(h, s, ["input_layer", "out_layer"], zero_grad_ratio=fp32_share)
    return h


def test_underflow_thresholds() -> None:
    [f] = grad_underflow.rule(zeros(0.9, [10, 11, 12]))
    assert (f.severity, f.first_step) == ("critical", 10)
    assert [x.kind for x in f.fixes] == ["scaler", "dtype"]
    assert grad_underflow.rule(zeros(0.89, [10, 11, 12]))[0].severity == "warning"
    assert grad_underflow.rule(zeros(0.9, [10, 11])) == []
    assert grad_underflow.rule(zeros(0.49, list(range(5, 20)))) == []


def test_structural_zeros_in_fp32_layers_too_are_not_underflow() -> None:
    assert grad_underflow.rule(zeros(0.95, list(range(5, 20)), fp32_share=0.9)) == []


def test_with_a_healthy_scale_zeros_are_not_underflow() -> None:
    h = zeros(0.99, list(range(5, 20)), scaler="custom")
    for s in h.steps:
        replace_step(h, s.step, loss_scale=2.0**12)
    assert grad_underflow.rule(h) == []
    for s in h.steps:
        replace_step(h, s.step, loss_scale=1.0)  # scale at 1: scaling isn't happening
    assert grad_underflow.rule(h)[0].severity == "critical"
