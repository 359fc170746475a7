"""adam_eps_underflow: pre-flight from RunInfo alone, and observed at the step it breaks."""

from __future__ import annotations

import pytest

from monitor.diagnosis import adam_eps_underflow, run_rules
from monitor.history import History

from .histories import FP32_MODEL, healthy, replace_rows, run_info


def preflight(**kw: object) -> list:
    return adam_eps_underflow.rule(History(run=run_info(**kw)))


def test_preflight_trellis_162_setup_is_critical_before_step_1() -> None:
    [f] = preflight()
    assert f.severity == "critical" and f.first_step == 0
    assert set(f.layers) == {"blocks.0", "blocks.1"}  # the fp16 blocks, not the fp32 layers
    assert any("rounds to 0" in e for e in f.evidence)
    assert [x.kind for x in f.fixes][:2] == ["dtype", "dtype"] and f.fixes[2].kind == "eps"
    assert "eps=0.0001" in f.fixes[2].snippet and "lr=0.0001" in f.fixes[0].snippet


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW", "NAdam", "RAdam", "Adamax"])
def test_every_adam_family_optimizer(optimizer: str) -> None:
    [f] = preflight(optimizer=optimizer)
    assert f.code == "adam_eps_underflow"
    kinds = [x.kind for x in f.fixes]
    # fused=True exists only for Adam/AdamW
    assert kinds.count("dtype") == (2 if optimizer in ("Adam", "AdamW") else 1)
    assert optimizer in f.fixes[0].snippet


@pytest.mark.parametrize("kw", [
    {"optimizer": "SGD"},
    {"fused": True},                      # the update runs in fp32 registers
    {"eps": 1e-4},                        # a normal fp16 number
    {"eps": 2**-14},                      # exactly the smallest normal: fine
    {"layers": FP32_MODEL},
    {"layers": {"blocks.0": "bfloat16"}},  # bf16 holds 1e-8
    {"in_optimizer": False},              # fp32 master copy, state dtype unknown -> not ours to guess
    {"eps": None},
])
def test_preflight_quiet(kw: dict) -> None:
    assert preflight(**kw) == []


def test_fp16_state_of_master_copy_is_still_flagged() -> None:
    [f] = preflight(in_optimizer=False, state_dtype="float16")
    assert f.severity == "critical"


def test_near_threshold_eps() -> None:
    assert preflight(eps=2**-25)[0].severity == "critical"  # rounds to 0
    [f] = preflight(eps=2**-25 * 1.001)  # survives as the smallest subnormal
    assert f.severity == "warning" and "subnormal" in f.title
    assert preflight(eps=6e-5)[0].severity == "warning"
    assert preflight(eps=6.2e-5) == []  # above the smallest normal 6.1035e-5


def test_group_index_picks_the_right_eps() -> None:
    run = run_info()
    from dataclasses import replace

    from monitor.history import GroupInfo
    groups = (GroupInfo(lr=1e-4, eps=1e-4), GroupInfo(lr=1e-4, eps=1e-8))
    layers = {k: replace(v, group=1 if k == "blocks.1" else 0) for k, v in run.layers.items()}
    [f] = adam_eps_underflow.rule(History(run=replace(run, groups=groups, layers=layers)))
    assert f.layers == ("blocks.1",)


def broken_at_step_1(**kw: object) -> History:
    h = healthy(run_info(**kw), steps=5)
    replace_rows(h, 1, ["blocks.0", "blocks.1"], param_nonfinite=600, state_zero_ratio=0.97)
    for s in range(2, 6):
        replace_rows(h, s, None, param_nonfinite=600, grad_nonfinite=600)
    return h


def test_observed_first_step_and_layers() -> None:
    [f] = adam_eps_underflow.rule(broken_at_step_1())
    assert f.severity == "critical" and f.first_step == 1
    assert f.layers == ("blocks.0", "blocks.1")
    assert any("exp_avg_sq == 0: 97%" in e for e in f.details)  # per layer: --verbose
    assert any("of exp_avg_sq == 0" in e and "in 2 layers" in e for e in f.evidence)  # aggregated
    assert any("float32 layers stayed finite" in e and "out_layer" in e for e in f.evidence)


def test_observed_needs_finite_grads_and_finite_params_before() -> None:
    h = broken_at_step_1(eps=1e-3)  # eps fine: only the observed half can fire
    replace_rows(h, 1, ["blocks.0", "blocks.1"], grad_nonfinite=5)
    assert adam_eps_underflow.rule(h) == []
    h = broken_at_step_1(eps=1e-3)
    replace_rows(h, 1, ["blocks.0", "blocks.1"], param_nonfinite_before=3)
    assert adam_eps_underflow.rule(h) == []


def test_observed_state_zero_threshold_when_eps_is_fine() -> None:
    h = broken_at_step_1(eps=1e-3)
    replace_rows(h, 1, ["blocks.0", "blocks.1"], state_zero_ratio=0.5)  # exactly at STATE_ZERO_MIN
    assert adam_eps_underflow.rule(h)[0].first_step == 1
    replace_rows(h, 1, ["blocks.0", "blocks.1"], state_zero_ratio=0.49)
    assert adam_eps_underflow.rule(h) == []


def test_observed_is_top_finding_over_nonfinite_after_update() -> None:
    found = run_rules(broken_at_step_1())
    assert found[0].code == "adam_eps_underflow" and found[0].first_step == 1
    assert "nonfinite_after_update" in [f.code for f in found]


def test_fused_run_is_never_flagged_even_with_zero_state() -> None:
    h = healthy(run_info(fused=True), steps=3)
    replace_rows(h, 1, ["blocks.0", "blocks.1"], state_zero_ratio=1.0)
    assert adam_eps_underflow.rule(h) == []
