"""adam_second_moment_lag and loss_spike on real watched runs (bench/lead_time.py scenarios, CPU MLP) and on
hand-built loss series: the warning ahead of the spike, the spike's exact step, no false positive on a
clean noisy run, and the first fix, executed as its snippet says, removing both."""

from __future__ import annotations

import math
import statistics

import pytest

from bench import lead_time
from monitor.diagnosis import adam_second_moment_lag, loss_spike, run_rules
from monitor.history import History, StepObs

from .histories import FP32_MODEL, healthy, replace_rows, run_info

CHANGE, STEPS = 300, 330


@pytest.fixture(scope="module")
def wakes() -> tuple[lead_time.Outcome, list]:
    """A zero-initialised input branch whose inputs switch on at CHANGE: the first layer's gradients jump
    while its exp_avg_sq is 0 (the paper's sudden gradient increase after small gradients)."""
    outcome = lead_time.run("input-wakes", 0, STEPS, CHANGE)
    return outcome, list(outcome.findings)


def test_lag_warning_names_the_layer_one_step_before_the_spike(wakes) -> None:
    outcome, found = wakes
    base = statistics.median(outcome.losses[CHANGE - 129:CHANGE - 1])
    assert outcome.losses[CHANGE - 1] < 1.5 * base  # the change itself does not move the loss ...
    assert outcome.losses[CHANGE] > 2 * base  # ... the first lagging update does, one step later
    top = found[0]
    assert (top.code, top.severity, top.first_step) == ("adam_second_moment_lag", "warning", CHANGE)
    assert top.layers[0] == "0"  # the first Linear: the one whose inputs woke up
    assert top.fixes[0].kind == "betas" and 'group["betas"] = (0.9, 0.95)' in top.fixes[0].snippet
    spike = next(f for f in found if f.code == "loss_spike")
    assert spike.first_step == CHANGE + 1 and spike.severity == "warning"
    assert any("adam_second_moment_lag" in line for line in spike.evidence)
    assert spike.fixes[0].kind == "betas"
    assert [f.code for f in found] == ["adam_second_moment_lag", "loss_spike"]


def test_first_fix_beta2_removes_the_lag_and_the_spike(wakes) -> None:
    """Both findings' first fix (the same: beta2 0.95), applied by executing its snippet: neither finding
    comes back, and the loss rises less than half as far after the change."""
    outcome, found = wakes
    fixed = lead_time.run("input-wakes", 0, STEPS, CHANGE, fix=found[0].fixes[0])
    codes = [f.code for f in fixed.findings]
    assert "adam_second_moment_lag" not in codes and "loss_spike" not in codes
    assert fixed.peak < 0.6 * outcome.peak


def test_planted_spike_exact_step_and_clean_noisy_run_quiet() -> None:
    """One batch with its targets x1.5 at step 250 of a clean noisy run: the top finding is the spike, at 250
    exactly (10.7x the median: the backstop, at once), and nothing fired on the 249 noisy steps before it
    (single batches there reach z ~10). The bad batch's own gradients also make the moment-lag ratio jump at
    250, which is no cause of that step's loss (computed before the update): not in the evidence, and the
    spike ranks first."""
    outcome = lead_time.run("clean", 0, steps=252, change=200, bad_batch=250, bad_targets=1.5)
    found = outcome.findings
    assert outcome.losses[249] > 10 * statistics.median(outcome.losses[120:249])
    top = found[0]
    assert (top.code, top.severity, top.first_step) == ("loss_spike", "warning", 250)
    assert "back under 2x the median at step 251" in top.evidence
    assert all(f.first_step == 250 for f in found)  # no false positive before the planted batch
    assert outcome.max_rms < adam_second_moment_lag.WARN  # over steps 1-199
    assert not any("adam_second_moment_lag" in line for line in top.evidence)
    assert top.fixes[0].kind == "clip"


# -- pure tests ------------------------------------------------------------------------------------

def series(values: list[float]) -> list[tuple[int, float]]:
    return list(enumerate(values, start=1))


def noisy(n: int = 40) -> list[float]:
    return [1.0 + 0.1 * math.sin(1.7 * i) for i in range(n)]  # median ~1, MAD ~0.07


@pytest.mark.parametrize(("spike", "after", "index"), [
    (2.0, 2.0, 40),  # z ~ 9, confirmed by the next step
    (2.0, 1.0, None),  # one odd batch: not confirmed
    (1.5, 1.5, None),  # z < 6
    (11.0, 1.0, 40),  # the 10x backstop (median ~1.01) needs no confirmation
])
def test_first_spike_thresholds(spike: float, after: float, index: int | None) -> None:
    losses = series([*noisy(), spike, after, 1.0])
    found = loss_spike.first_spike(losses)
    assert (found[0] if found else None) == index


def test_a_jump_before_enough_history_is_dated_back_to_its_start() -> None:
    """The loss jumps 1000x at the 11th observation; 16 are needed: detected at the 17th, dated at the 11th."""
    losses = series([*noisy(10), *[1000.0] * 20])
    start, detected, *_ = loss_spike.first_spike(losses)
    assert (start, detected) == (10, 16)


def test_flat_loss_uses_the_mad_floor_and_needs_history() -> None:
    flat = [1.0] * 30
    assert loss_spike.first_spike(series([*flat, 1.05, 1.05])) is None  # 5%: z 3.4 with the 1% floor
    assert loss_spike.first_spike(series([*flat, 1.2, 1.2]))[0] == 30
    assert loss_spike.first_spike(series([1.0] * 10 + [50.0, 50.0])) is None  # < 16 observations


def test_rules_read_nonfinite_and_missing_values_safely() -> None:
    h = healthy(run_info(FP32_MODEL), steps=40)
    h.steps = [StepObs(step=s.step, loss=math.nan if s.step == 20 else s.loss) for s in h.steps]
    replace_rows(h, 30, adam_rms_ratio=math.inf)
    assert not loss_spike.rule(h) and not adam_second_moment_lag.rule(h)
    replace_rows(h, 31, ["blocks.0"], adam_rms_ratio=adam_second_moment_lag.WARN)
    lag = adam_second_moment_lag.rule(h)
    assert lag[0].first_step == 31 and lag[0].layers == ("blocks.0",)
    assert "adam_second_moment_lag" in [f.code for f in run_rules(History(run=h.run, steps=h.steps, layers=h.layers))]


def test_prometheus_series_reach_the_rules() -> None:
    """The exported per-layer series read back from Prometheus samples become the rows the rules read."""
    from monitor.sources.timeline import build_history

    def sample(name: str, values: list[tuple[float, float]], **labels: str) -> tuple[dict, list]:
        return {"__name__": name, "run": "r", "rank": "0", **labels}, values

    series = [sample("slatmon_step", [(1, 1), (2, 2), (3, 3)]),
              sample("slatmon_sampled_step", [(1, 1), (2, 2), (3, 3)]),
              sample("slatmon_adam_rms_ratio", [(1, 1.0), (2, 7.5), (3, 1.2)], layer="enc"),
              sample("slatmon_update_unchanged_ratio", [(1, 0.9), (2, 0.95), (3, 1.0)], layer="enc")]
    h = build_history(series, "r", 0)
    assert [(r.step, r.adam_rms_ratio, r.update_unchanged_ratio) for r in h.layers] == [
        (1, 1.0, 0.9), (2, 7.5, 0.95), (3, 1.2, 1.0)]
    lag = adam_second_moment_lag.rule(h)
    assert lag[0].first_step == 2 and lag[0].layers == ("enc",)


def test_alert_threshold_is_the_rules() -> None:
    from monitor.ops import alerts

    rule = next(a for a in alerts.ALERTS if a.name == "SlatmonAdamMomentLag")
    assert alerts.MOMENT_LAG_WARN == adam_second_moment_lag.WARN and rule.expr.endswith(f">= {alerts.MOMENT_LAG_WARN}")
