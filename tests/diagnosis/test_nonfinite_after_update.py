"""nonfinite_after_update: finite gradients, non-finite parameters right after the update."""

from __future__ import annotations

import dataclasses

from monitor.diagnosis import nonfinite_after_update
from monitor.history import History

from .histories import FP32_MODEL, healthy, replace_rows, replace_step, run_info


def test_fires_at_the_first_broken_update() -> None:
    h = healthy(run_info(FP32_MODEL, eps=1e-8), steps=10)
    replace_rows(h, 4, ["blocks.1"], param_nonfinite=7)
    for s in range(5, 11):
        replace_rows(h, s, None, param_nonfinite=7, grad_nonfinite=7)
    [f] = nonfinite_after_update.rule(h)
    assert (f.severity, f.first_step, f.layers) == ("critical", 4, ("blocks.1",))
    assert "7 non-finite parameter elements" in f.details[0]
    assert "in 1 layer; in: blocks.1 (7)" in f.evidence[0]


def test_quiet_when_gradients_were_not_finite() -> None:
    h = healthy(steps=5)
    replace_rows(h, 3, ["blocks.0"], param_nonfinite=5, grad_nonfinite=1)
    assert nonfinite_after_update.rule(h) == []


def test_quiet_when_params_were_already_broken() -> None:
    h = healthy(steps=5)
    replace_rows(h, 2, ["blocks.0"], param_nonfinite=5, grad_nonfinite=1)
    replace_rows(h, 3, ["blocks.0"], param_nonfinite=5)  # finite grads but NaN since step 2
    assert nonfinite_after_update.rule(h) == []


def test_quiet_on_a_skipped_step_and_on_healthy_runs() -> None:
    h = healthy(steps=5)
    assert nonfinite_after_update.rule(h) == []
    replace_rows(h, 3, ["blocks.0"], param_nonfinite=5)
    replace_step(h, 3, skipped=True)
    assert nonfinite_after_update.rule(h) == []


def test_step_totals_without_layer_rows() -> None:
    h = healthy(steps=5)
    h.layers = []
    replace_step(h, 2, param_nonfinite=9, grad_nonfinite=0)
    [f] = nonfinite_after_update.rule(h)
    assert f.first_step == 2 and f.layers == ()


def test_grad_count_none_uses_the_step_total() -> None:
    h = healthy(steps=3)
    replace_rows(h, 2, ["blocks.0"], param_nonfinite=5, grad_nonfinite=None)
    assert nonfinite_after_update.rule(h)[0].layers == ("blocks.0",)
    h.steps = [dataclasses.replace(s, grad_nonfinite=None) for s in h.steps]
    assert nonfinite_after_update.rule(h) == []  # gradients not measured: no claim
    assert nonfinite_after_update.rule(History()) == []
