"""Issue 4 acceptance, end to end on trainer_example (tiny config, CPU): each fault flag yields its
expected top finding, no-fault runs of every precision mode yield no critical finding, and the TRELLIS
#162 case is diagnosed at step 1 in the fp16 blocks - and the first recommended fix, applied, trains
finitely. Each run is watched exactly as a user would (monitor.watch via the trainer) and diagnosed
from its run record.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import monitor
from monitor.findings import Finding, Fix

pytestmark = pytest.mark.slow

trainer = pytest.importorskip("monitor.example.train")

STEPS, FAULT_STEP = 12, 5
EXPECTED_TOP = {
    "eps-underflow": "adam_eps_underflow",
    "overflow": "grad_overflow_no_scaler",
    "loss-nan": "nonfinite_loss",
    "lr-spike": "lr_too_high",
    "underflow": "grad_underflow",
}


def train(tmp: Path, name: str, **cfg: object) -> tuple[object, list[Finding]]:
    """A watched tiny run with a run record; (RunResult, diagnose(record))."""
    record = tmp / f"{name}.sqlite"
    settings = {"config": "tiny", "steps": STEPS, "fault_step": FAULT_STEP, "device": "cpu", "watch": True,
                "port": None, "record": str(record), **cfg}
    config = trainer.TrainConfig(**settings)
    result = trainer.run(config)
    return result, monitor.diagnose(record)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.mark.parametrize("fault", list(EXPECTED_TOP))
def test_fault_yields_expected_top_finding(fault: str, runs_dir: Path) -> None:
    _, found = train(runs_dir, fault, fault=fault)
    assert found, "no finding at all"
    assert found[0].code == EXPECTED_TOP[fault], [(f.code, f.severity, f.first_step) for f in found]
    assert found[0].severity in ("critical", "warning")
    if fault != "eps-underflow":
        assert found[0].first_step == FAULT_STEP


@pytest.mark.parametrize("precision", ["fp32", "inflat_all", "amp", "fp16-naive"])
def test_no_fault_run_has_no_critical_finding(precision: str, runs_dir: Path) -> None:
    result, found = train(runs_dir, f"none-{precision}", fault="none", precision=precision)
    assert all(math.isfinite(x) for x in result.losses)
    assert [f for f in found if f.severity == "critical"] == [], [(f.code, f.evidence) for f in found]


def apply_fix(fix: Fix) -> dict[str, object]:
    """The #162 set-up with `fix` applied as its snippet is written (TrainConfig.fix executes it)."""
    return {"precision": "fp16-naive", "eps": 1e-8, "fix": fix}


def test_trellis_162_end_to_end_and_fixes(runs_dir: Path) -> None:
    result, found = train(runs_dir, "trellis-162", precision="fp16-naive", eps=1e-8)
    top = found[0]
    assert (top.code, top.severity, top.first_step) == ("adam_eps_underflow", "critical", 1)
    info = monitor.diagnosis.load_history(runs_dir / "trellis-162.sqlite").run.layers
    fp16 = {name for name, li in info.items() if li.dtype == "float16"}
    fp32 = {name for name, li in info.items() if li.dtype == "float32"}
    assert set(top.layers) == fp16 and not set(top.layers) & fp32
    assert set(result.steps[0].nonfinite_params)  # the trainer saw it too

    first = top.fixes[0]
    assert first.kind == "dtype" and "lr=0.0001" in first.snippet
    fixed, refound = train(runs_dir, "trellis-162-fixed", **apply_fix(first))
    assert all(math.isfinite(x) for x in fixed.losses)
    assert not any(s.nonfinite_params for s in fixed.steps)
    assert [f for f in refound if f.severity == "critical"] == []

    eps_fix = next(f for f in top.fixes if f.kind == "eps")
    fixed, _ = train(runs_dir, "trellis-162-eps", **apply_fix(eps_fix))
    assert all(math.isfinite(x) for x in fixed.losses)


@pytest.mark.parametrize("precision", ["amp", "inflat_all"])
def test_overflow_under_a_loss_scaler_is_a_collapse_naming_the_module(precision: str, runs_dir: Path) -> None:
    """With a scaler the overflowing steps are skipped and the scale keeps falling; localisation (armed on
    the next step, weights still finite) names the attention core whose fp16 logits overflowed (its input
    qkv finite, its output not: tests/trainer_example/test_faults.py). The overflow explains the collapse:
    it ranks first from the fault step (the model output was already non-finite there), the collapse
    second, saying what it follows from."""
    _, found = train(runs_dir, f"overflow-{precision}", fault="overflow", precision=precision, steps=30)
    top, collapse = found[:2]
    assert (top.code, top.severity, top.first_step) == ("nonfinite_forward", "critical", FAULT_STEP)
    assert (collapse.code, collapse.severity, collapse.first_step) == ("loss_scale_collapse", "critical", FAULT_STEP)
    assert top.layers == collapse.layers == ("encoder.blocks.0.attn.core",)
    assert f"follows from nonfinite_forward at step {FAULT_STEP}" in collapse.evidence[-1]
    for f in (top, collapse):
        assert f.fixes[0].kind == "dtype" and "encoder.blocks.0.attn.core" in f.fixes[0].snippet
