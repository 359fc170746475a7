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
    assert top.fixes[0].kind == "betas" and "betas=(0.9, 0.95)" in top.fixes[0].snippet
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
    """One corrupted batch at step 250 of a clean noisy run: the spike rule fires at 250 exactly (the 10x
    backstop, at once), and on none of the 249 noisy steps before it (its batches reach z ~10 without a
    spike); the moment-lag warning stays quiet on them (RMS up to ~2.4) and fires with the bad batch's own
    gradients at 250, which is no cause of that step's loss (computed before the update)."""
    outcome = lead_time.run("clean", 0, steps=252, change=200, bad_batch=250)
    found = outcome.findings
    spikes = [f for f in found if f.code == "loss_spike"]
    assert len(spikes) == 1 and spikes[0].first_step == 250
    assert outcome.losses[249] > 100 * statistics.median(outcome.losses[120:249])
    assert [f.first_step for f in found if f.code == "adam_second_moment_lag"] == [250]
    assert outcome.max_rms < adam_second_moment_lag.WARN  # over steps 1-199
    assert not any("adam_second_moment_lag" in line for line in spikes[0].evidence)
    assert spikes[0].fixes[0].kind == "clip"


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
