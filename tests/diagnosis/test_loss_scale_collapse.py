"""loss_scale_collapse: settling stays quiet, a scale that keeps falling is critical."""

from __future__ import annotations

from monitor.diagnosis import loss_scale_collapse, run_rules

from .histories import FP16_BLOCKS, localized, run_info, scaled


def gradscaler_run(settle: int, later_skips: list[int], steps: int = 60, start: float = 65536.0):
    """Settle with `settle` skips from `start`, then skip at the given steps (halving each time)."""
    scales, skipped, scale = [], [], start
    for s in range(1, steps + 1):
        skip = s <= settle or s in later_skips
        if skip:
            scale /= 2
        scales.append(scale)
        skipped.append(skip)
    return scaled(steps, scales, skipped)


def test_gradscaler_settling_is_quiet() -> None:
    assert loss_scale_collapse.rule(gradscaler_run(settle=8, later_skips=[])) == []


def test_trellis_settling_from_2_pow_20_is_quiet() -> None:
    h = gradscaler_run(settle=12, later_skips=[], start=2.0**20)  # 2**20 -> 2**8, then clean
    assert loss_scale_collapse.rule(h) == []
    assert not [f for f in run_rules(h) if f.severity == "critical"]


def test_scale_below_one_is_critical() -> None:
    h = gradscaler_run(settle=17, later_skips=[], steps=30)  # 65536 / 2**17 = 0.5
    [f] = loss_scale_collapse.rule(h)
    assert f.severity == "critical" and f.first_step == 1
    assert "32768 -> 0.5 from step 1 to 17; 17 of 17 steps skipped" in f.evidence[0]


def test_sixteen_settling_skips_stay_quiet() -> None:
    assert loss_scale_collapse.rule(gradscaler_run(settle=16, later_skips=[], steps=30)) == []  # scale 1.0


def test_collapse_after_settling_window_threshold() -> None:
    ten = list(range(31, 51, 2))  # 10 skips in 20 steps after settling
    [f] = loss_scale_collapse.rule(gradscaler_run(settle=4, later_skips=ten))
    assert f.severity == "critical" and f.first_step == 31
    nine = list(range(31, 49, 2))  # 9 skips: only the warning
    [w] = loss_scale_collapse.rule(gradscaler_run(settle=4, later_skips=nine))
    assert w.severity == "warning"


def test_rare_skips_after_settling_are_quiet() -> None:
    assert loss_scale_collapse.rule(gradscaler_run(settle=5, later_skips=[30, 55])) == []


def test_localized_module_named_and_fix_targets_it() -> None:
    h = gradscaler_run(settle=0, later_skips=list(range(10, 40)), steps=40)
    h.events.append(localized(11, "blocks.1.attn", out_absmax=float("inf")))
    [f] = loss_scale_collapse.rule(h)
    assert f.layers == ("blocks.1.attn",) and f.first_step == 10
    assert f.fixes[0].kind == "dtype" and "blocks.1.attn" in f.fixes[0].snippet
    assert any("cannot fix a forward overflow" in e for e in f.evidence)


def test_no_scaler_no_finding() -> None:
    h = gradscaler_run(settle=20, later_skips=[])
    h.run = run_info(FP16_BLOCKS, scaler="none")
    h.steps = [s.__class__(**{**s.__dict__, "loss_scale": None}) for s in h.steps]
    assert loss_scale_collapse.rule(h) == []


def test_skipped_total_counts_skips_between_sparse_samples() -> None:
    """Prometheus-like: only every 4th step is seen, skipped_total carries the skips in between."""
    h = gradscaler_run(settle=2, later_skips=list(range(20, 60)), steps=60)
    h.steps = [s for s in h.steps if s.step % 4 == 0]
    [f] = loss_scale_collapse.rule(h)
    assert f.severity == "critical"


def test_collapse_start_excludes_settling_and_old_skips() -> None:
    """GradScaler's first-step back-off is settling, not the start of a collapse from step 5."""
    [f] = loss_scale_collapse.rule(gradscaler_run(settle=1, later_skips=list(range(5, 40)), steps=40))
    assert f.first_step == 5
    # an isolated skip long before the collapse is not its start either
    [g] = loss_scale_collapse.rule(gradscaler_run(settle=2, later_skips=[20] + list(range(50, 80)), steps=80))
    assert g.first_step == 50
