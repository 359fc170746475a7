"""run_rules: isolation of broken rules, merging per code, pre-flight merge, ranking, healthy runs."""

from __future__ import annotations

import logging

import pytest

from monitor.diagnosis import RULES, diagnose, run_rules
from monitor.diagnosis.engine import merge
from monitor.errors import RecordError
from monitor.findings import Finding, Fix
from monitor.history import History

from .histories import FP16_BLOCKS, FP32_MODEL, codes, healthy, run_info, scaled


def test_every_contract_code_has_a_rule() -> None:
    contract = {"adam_eps_underflow", "nonfinite_after_update", "grad_overflow_no_scaler", "grad_underflow",
                "loss_scale_collapse", "nonfinite_forward", "nonfinite_loss", "grad_explosion", "lr_too_high"}
    assert contract <= {name for name, _ in RULES}


def test_a_broken_rule_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(history: History) -> list[Finding]:
        raise ZeroDivisionError("boom")

    def fine(history: History) -> list[Finding]:
        return [Finding("x", "warning", "t", ("e",), 3)]

    reported = []
    with caplog.at_level(logging.WARNING, logger="monitor.diagnosis"):
        found = run_rules(History(), rules=[("broken", broken), ("fine", fine)],
                          on_error=lambda name, exc: reported.append((name, str(exc))))
    assert sorted(codes(found)) == ["diagnosis_incomplete", "x"]  # never healthy on a diagnosis that did not complete
    [gap] = [f for f in found if f.code == "diagnosis_incomplete"]
    assert gap.severity == "warning" and "broken" in gap.title and "boom" in gap.evidence[0] and gap.first_step == 0
    assert reported == [("broken", "boom")]
    assert "broken" in caplog.text and "boom" in caplog.text


def test_merge_keeps_one_finding_per_code() -> None:
    a = Finding("c", "warning", "first", ("e1",), 5, ("l1",), (Fix("lr", "a"),))
    b = Finding("c", "critical", "second", ("e2",), 7, ("l2",), (Fix("clip", "b"),))
    [m] = merge([a, b])
    assert (m.severity, m.title, m.first_step) == ("critical", "second", 5)
    assert m.evidence == ("e1", "e2") and m.layers == ("l1", "l2") and m.fixes[0].kind == "clip"


def test_preflight_kept_unless_a_rule_reproduces_the_code() -> None:
    h = healthy(run_info(FP32_MODEL), steps=3)
    h.preflight = [Finding("lead_lint", "info", "from the watcher", ("x",), 0),
                   Finding("adam_eps_underflow", "critical", "as recorded", ("x",), 0)]
    # the rules cannot reproduce it from this RunInfo (e.g. a sparse Prometheus history): kept as recorded
    assert codes(run_rules(h)) == ["adam_eps_underflow", "lead_lint"]
    h.run = run_info(FP16_BLOCKS)
    found = run_rules(h)
    assert codes(found).count("adam_eps_underflow") == 1
    assert next(f for f in found if f.code == "adam_eps_underflow").title != "as recorded"


def test_ranking_severity_then_step() -> None:
    h = History(run=run_info(FP16_BLOCKS, eps=1e-8))
    found = run_rules(h)
    assert [f.severity for f in found] == sorted((f.severity for f in found),
                                                  key=["critical", "warning", "info"].index)


@pytest.mark.parametrize(("layers", "scaler", "in_optimizer", "eps", "scale"), [
    (FP32_MODEL, "none", True, 1e-8, None),                 # fp32
    (FP16_BLOCKS, "custom", False, 1e-8, 2.0**14),          # inflat_all
    (FP32_MODEL, "grad_scaler", True, 1e-8, 65536.0),       # amp
    (FP16_BLOCKS, "none", True, 1e-4, None),                # fp16-naive with a safe eps
])
def test_healthy_runs_have_no_critical_finding(layers, scaler, in_optimizer, eps, scale) -> None:
    h = healthy(run_info(layers, scaler=scaler, in_optimizer=in_optimizer, eps=eps), steps=60, loss_scale=scale)
    assert [f for f in run_rules(h) if f.severity == "critical"] == []


def test_settling_scaler_run_has_no_finding_at_all() -> None:
    scales = [65536.0 / 2 ** min(s, 5) for s in range(1, 41)]
    skipped = [s <= 5 for s in range(1, 41)]
    assert run_rules(scaled(40, scales, skipped)) == []


def test_diagnose_sources() -> None:
    h = History(run=run_info())
    assert codes(diagnose(h))[0] == "adam_eps_underflow"

    class FakeWatcher:  # anything with .history() (the watcher protocol), not a mock of a real component
        def history(self) -> History:
            return h

    assert codes(diagnose(FakeWatcher()))[0] == "adam_eps_underflow"
    with pytest.raises(RecordError, match="no run record"):
        diagnose("/nonexistent/run.sqlite")
    with pytest.raises(RecordError, match="cannot diagnose"):
        diagnose(42)
