"""fp16_no_loss_scale and fp16_optimizer_state: configuration warnings before step 1."""

from __future__ import annotations

from monitor.diagnosis import fp16_no_loss_scale, fp16_optimizer_state, run_rules
from monitor.history import History

from .histories import FP16_BLOCKS, FP32_MODEL, codes, healthy, replace_rows, run_info


def test_fp16_without_loss_scaling_warns() -> None:
    [f] = fp16_no_loss_scale.rule(History(run=run_info(eps=1e-4)))
    assert (f.severity, f.first_step, f.layers) == ("warning", 0, ("blocks.0", "blocks.1"))
    assert [x.kind for x in f.fixes] == ["scaler", "dtype"]  # by hand with master copies; bfloat16
    [d] = fp16_no_loss_scale.rule(History(run=run_info(scaler="disabled")))
    assert any("enabled=False" in e for e in d.evidence)


def test_fp16_with_scaling_or_fp32_is_quiet() -> None:
    assert fp16_no_loss_scale.rule(History(run=run_info(scaler="custom"))) == []
    assert fp16_no_loss_scale.rule(History(run=run_info(FP32_MODEL))) == []
    h = healthy(run_info(scaler="none"), steps=3, loss_scale=1024.0)  # a scale observed anyway
    assert fp16_no_loss_scale.rule(h) == []


def test_fp16_state_warns_when_eps_survives() -> None:
    [f] = fp16_optimizer_state.rule(History(run=run_info(eps=1e-4)))
    assert f.severity == "warning" and f.layers == ("blocks.0", "blocks.1")
    assert f.fixes[0].kind == "dtype" and "master" in f.fixes[0].snippet


def test_fp16_state_defers_to_adam_eps_underflow() -> None:
    found = run_rules(History(run=run_info(eps=1e-8)))
    assert "fp16_optimizer_state" not in codes(found)
    assert codes(found)[0] == "adam_eps_underflow"


def test_fp16_state_quotes_observed_zero_share() -> None:
    h = healthy(run_info(eps=1e-4), steps=4)
    replace_rows(h, 4, ["blocks.1"], state_zero_ratio=0.93)
    [f] = fp16_optimizer_state.rule(h)
    assert any("93%" in e and "blocks.1" in e for e in f.evidence)


def test_fp16_state_quiet_for_master_weights_and_sgd() -> None:
    assert fp16_optimizer_state.rule(History(run=run_info(in_optimizer=False))) == []
    assert fp16_optimizer_state.rule(History(run=run_info(optimizer="SGD"))) == []
    assert fp16_optimizer_state.rule(History(run=run_info(FP16_BLOCKS, state_dtype="float32"))) == []
