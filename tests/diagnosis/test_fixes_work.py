"""Issue #13 acceptance: the fixes a fault's findings offer work when applied as written.

For each trainer_example fault in its auto precision (and the overflow under autocast): a watched run,
its diagnosis, then every fix of the findings about that failure is applied exactly as its snippet is
written (`TrainConfig.fix`: the snippet text is executed in the trainer, monitor.example.apply_fix) and the
run repeated unwatched. Ground truth is the trainer's own numbers (raw torch, no monitor). What "works"
means per fault:
- eps-underflow, overflow, loss-nan: every loss and every parameter finite (loss-nan: no step skipped);
- lr-spike: the symptom gone - every update/parameter ratio from the fault step on below lr_too_high's
  warning threshold, and the loss no longer climbs (the spike itself is the run's own schedule, which
  the fix caps);
- underflow: the symptom gone - after the first applied update, the share of exactly-zero gradients in
  the parameters that were float16 stays below grad_underflow's warning threshold (the first update is
  left out: the zero-initialised encoder head blocks every encoder gradient there, with or without a fault);
- grad-corrupt: a 1e-3 relative change after the all-reduce is invisible on one rank and its cross-rank
  finding has no code fix (faulty hardware is drained, not patched): no fix may be offered here.
A fix that only eases a symptom must say so (`mitigates`, "Only mitigates" first); those are not run.
"""

from __future__ import annotations

import math
import re
from functools import cache

import pytest

from monitor.diagnosis import grad_underflow, lr_too_high
from monitor.diagnosis.fixes import module_fp32_fix
from monitor.findings import Finding, Fix

pytestmark = pytest.mark.slow

trainer = pytest.importorskip("monitor.example.train")
faults = pytest.importorskip("monitor.example.faults")

STEPS, K = 6, 2  # steps per run, fault step
OVERFLOW_MODULE = "encoder.blocks.0.attn.core"  # where faults.py raises the logits
# finding code -> the fault whose failure it is about (its fixes are executed on runs of that fault)
ADDRESSES = {
    "adam_eps_underflow": "eps-underflow", "nonfinite_after_update": "eps-underflow",
    "grad_overflow_no_scaler": "overflow", "nonfinite_forward": "overflow", "loss_scale_collapse": "overflow",
    "nonfinite_loss": "loss-nan", "lr_too_high": "lr-spike", "grad_explosion": "lr-spike",
    "grad_underflow": "underflow", "fp16_no_loss_scale": "underflow", "fp16_optimizer_state": "eps-underflow",
}
RUNS = [("eps-underflow", "auto"), ("overflow", "auto"), ("overflow", "amp"), ("loss-nan", "auto"),
        ("lr-spike", "auto"), ("underflow", "auto")]


def config(fault: str, precision: str, **kw: object) -> object:
    return trainer.TrainConfig(config="tiny", fault=fault, precision=precision, steps=STEPS, fault_step=K,
                               device="cpu", **kw)


@cache
def faulted(fault: str, precision: str) -> tuple[object, tuple[Finding, ...]]:
    """The watched run with the fault and its findings (Watcher.findings() before close)."""
    result = trainer.run(config(fault, precision, watch=True, port=None))
    return result, tuple(result.findings)


@cache
def fixed(fault: str, precision: str, fix: Fix) -> object:
    return trainer.run(config(fault, precision, fix=fix))


def finite(result: object) -> list[str]:
    return [f"step {s.step}: loss {s.loss}, non-finite {s.nonfinite_params[:2]}" for s in result.steps
            if not math.isfinite(s.loss) or s.nonfinite_params]


def problems(fault: str, base: object, result: object) -> list[str]:
    """What is still wrong with `result` (a rerun with a fix) for `fault`; [] when the fix worked."""
    bad = finite(result)
    after = [s for s in result.steps if s.step >= K]
    if fault == "loss-nan":
        bad += [f"step {s.step} skipped" for s in result.steps if s.skipped]
    if fault == "lr-spike":
        bad += [f"step {s.step}: update ratio {s.update_ratio:.3g}" for s in after
                if not s.update_ratio < lr_too_high.WARN_RATIO]
        if max(s.loss for s in after) > 2 * base.steps[0].loss:
            bad.append(f"loss climbs: {[round(s.loss, 3) for s in after]}")
    if fault == "underflow":
        applied = [s for s in after if not s.skipped][1:]
        bad += [f"step {s.step}: {s.fp16_zero_grad_ratio:.0%} zero gradients" for s in applied
                if not s.fp16_zero_grad_ratio < grad_underflow.WARN_SHARE]
        if not applied:
            bad.append("no update applied after the first one from the fault step on")
    return bad


def symptom_shown(fault: str, base: object) -> None:
    """The faulted run shows what `problems` checks for, so each check can fail."""
    assert problems(fault, base, base), f"{fault}: the faulted run shows no symptom"


def offered(fault: str, precision: str) -> list[tuple[Finding, Fix]]:
    """Every (finding, fix) of the run's findings about this fault."""
    _, found = faulted(fault, precision)
    return [(f, x) for f in found if ADDRESSES.get(f.code) == fault for x in f.fixes]


@pytest.mark.parametrize(("fault", "precision"), RUNS)
def test_every_fix_offered_works_or_says_it_only_mitigates(fault: str, precision: str) -> None:
    base, found = faulted(fault, precision)
    symptom_shown(fault, base)
    assert found and ADDRESSES.get(found[0].code) == fault, [f.code for f in found]
    top = found[0].fixes[0]
    assert not top.mitigates, f"the top finding's first fix only mitigates: {top.summary}"
    ran = 0
    for finding, fix in offered(fault, precision):
        if fix.mitigates:
            assert fix.summary.startswith("Only mitigates"), fix.summary
            continue
        bad = problems(fault, base, fixed(fault, precision, fix))
        assert bad == [], f"{finding.code}: [{fix.kind}] {fix.summary}\n{fix.snippet}\n{bad}"
        ran += 1
    assert ran >= 1


def test_other_findings_are_about_another_fault() -> None:
    """A finding in a run that is not about that run's fault (a pre-flight risk note) offers a fix run
    elsewhere: fp16_optimizer_state's master copy is adam_eps_underflow's first fix."""
    for fault, precision in RUNS:
        for f in faulted(fault, precision)[1]:
            assert f.code in ADDRESSES, f.code
    notes = [f for fault, precision in RUNS for f in faulted(fault, precision)[1] if f.code == "fp16_optimizer_state"]
    master = faulted("eps-underflow", "auto")[1][0].fixes[0]
    shape = lambda fix: re.sub(r"[0-9.e+-]+", "N", fix.snippet)  # noqa: E731 - same code, the run's own numbers
    assert notes and all(shape(n.fixes[0]) == shape(master) for n in notes)


def test_float32_island_works_without_and_under_autocast() -> None:
    """The overflow's module in float32, applied as written: in fp16-naive (no autocast; the diagnosis
    cannot name the module there, the weights are NaN before localisation runs) and under amp's autocast
    (where the diagnosis names it and offers it first)."""
    island = module_fp32_fix(OVERFLOW_MODULE)
    for precision in ("fp16-naive", "amp"):
        base, _ = faulted("overflow", "auto") if precision == "fp16-naive" else faulted("overflow", "amp")
        assert finite(base)
        assert problems("overflow", base, fixed("overflow", precision, island)) == []
    _, found = faulted("overflow", "amp")
    assert found[0].fixes[0].snippet == island.snippet


def test_forward_overflow_is_never_offered_loss_scaling() -> None:
    for precision in ("auto", "amp"):
        for f in faulted("overflow", precision)[1]:
            if f.code in ("grad_overflow_no_scaler", "nonfinite_forward", "loss_scale_collapse"):
                assert all(x.kind != "scaler" for x in f.fixes), (f.code, [x.summary for x in f.fixes])


def test_eps_underflow_is_never_offered_a_lower_lr() -> None:
    for f in faulted("eps-underflow", "auto")[1]:
        assert all(x.kind != "lr" for x in f.fixes), (f.code, [x.summary for x in f.fixes])


def test_grad_corrupt_on_one_rank_offers_no_fix() -> None:
    result = trainer.run(config("grad-corrupt", "auto", watch=True, port=None))
    assert not finite(result)
    assert [x for f in result.findings for x in f.fixes] == []
