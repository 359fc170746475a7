"""Never "healthy" while anything non-finite was seen, whatever the dtype: NaN batches in fp32, bf16
and fp16, a NaN gradient that clipping spreads to every layer under bf16 autocast, and a persistent
overflow under TRELLIS's hand-made loss scale. The step comes from the raw training loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import monitor
from monitor.diagnosis import run_rules
from monitor.history import Event
from tests.monitor.faults import NAN_AT, NEVER_HEALTHY, fault_record, first_nonfinite_step
from tests.monitor.matrix import Cell, run_cell

from .histories import FP32_MODEL, codes, healthy, replace_step, run_info
from .test_cli import cli


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    folder = tmp_path_factory.mktemp("faults")
    return {name: fault_record(name, folder) for name in NEVER_HEALTHY}


@pytest.mark.parametrize("name", sorted(NEVER_HEALTHY))
def test_nonfinite_run_gets_a_critical_finding_at_the_right_step(faults, name: str) -> None:
    path, truth = faults[name]
    assert first_nonfinite_step(truth) == NAN_AT
    top = monitor.diagnose(str(path))[0]
    assert top.severity == "critical", top
    assert top.first_step == NAN_AT, top


def test_clipping_spread_names_the_layer_that_went_nan_first(faults) -> None:
    path, truth = faults["bf16-clip-spread"]
    assert [k for k, v in truth.grad_nonfinite[NAN_AT].items() if v] == ["blocks.0"]
    [top] = [f for f in monitor.diagnose(str(path)) if f.severity == "critical"]
    assert top.layers == ("blocks.0",)
    assert any("before clipping only blocks.0" in line for line in top.evidence), top.evidence


@pytest.mark.parametrize("name", sorted(NEVER_HEALTHY))
def test_cli_exits_1(faults, name: str) -> None:
    out = cli(str(faults[name][0]))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[CRITICAL]" in out.stdout and "healthy" not in out.stdout


def test_trellis_persistent_overflow_is_critical() -> None:
    """TRELLIS inflat_all watched the natural way: the root models dict is never called, skips never
    call optimizer.step(); 6 of 8 steps get an inf in their input batch and are skipped (scale 2**12 ->
    2**6). The bad data explains the collapse: it ranks first, the collapse says it follows from it."""
    cell = Cell("inflat_all", container_root=True, bad_steps=(3, 4, 5, 6, 7, 8))
    truth, w = run_cell(cell, watch=True)
    assert truth.skipped == [3, 4, 5, 6, 7, 8]
    assert w.counters.skipped_steps == 6 and w.counters.step == 8
    top, second = w.findings()[:2]
    assert (top.code, top.severity, top.first_step, top.layers) == ("nonfinite_input", "critical", 3, ("encoder",))
    assert "args[0] of encoder" in top.title  # the decoder's input is the encoder's output: not data
    assert (second.code, second.severity, second.first_step) == ("loss_scale_collapse", "critical", 3)
    assert "follows from nonfinite_input at step 3" in second.evidence[-1]


def test_a_finding_that_explains_nothing_does_not_hide_a_skipped_nan() -> None:
    """NaN gradients only on a skipped step, next to a finding about the record (or a trend, or a lint): the
    NaN still gets its own finding - regression: any finding at all used to silence nonfinite_values."""
    h = replace_step(healthy(run_info(FP32_MODEL)), 12, grad_norm_total=float("nan"), grad_nonfinite=4,
                     skipped=True, skip_reason="user")
    h.events.append(Event(5, "record_gap", None, None, {"first": 5, "last": 7, "observations": 3,
                                                           "reason": "disk full"}))
    found = run_rules(h)
    assert "record_incomplete" in codes(found)
    (nan,) = [f for f in found if f.code == "nonfinite_values"]
    assert nan.severity == "warning" and nan.first_step == 12
