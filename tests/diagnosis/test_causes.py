"""Cause before consequence (findings.rank / explain): pure tests of the ordering and its limits."""

from __future__ import annotations

from monitor.findings import EXPLAINS, Finding, explain, rank


def f(code: str, step: int | None, severity: str = "critical") -> Finding:
    return Finding(code, severity, code, ("own evidence",), step)


def codes(found: list[Finding]) -> list[str]:
    return [x.code for x in found]


def test_a_cause_sharing_the_step_moves_first_and_the_consequence_says_so() -> None:
    given = [f("loss_scale_collapse", 5), f("lr_schedule_on_skip", 5, "warning"), f("nonfinite_forward", 5)]
    out = explain(given)
    assert codes(out) == ["nonfinite_forward", "loss_scale_collapse", "lr_schedule_on_skip"]
    assert out[1].evidence == ("own evidence", "follows from nonfinite_forward at step 5: ranked after the "
                                               "finding that explains it")
    assert out[1].severity == "critical" and out[0].evidence == ("own evidence",)
    # idempotent, and any later rank() (the triage page ranks again) keeps the order
    assert explain(out) == out and rank(out) == out


def test_the_root_cause_of_a_chain_is_named() -> None:
    out = explain([f("loss_scale_collapse", 7), f("nonfinite_loss", 7), f("nonfinite_input", 7)])
    assert codes(out) == ["nonfinite_input", "nonfinite_loss", "loss_scale_collapse"]
    assert all(x.evidence[-1].startswith("follows from nonfinite_input at step 7") for x in out[1:])


def test_limits_severity_window_direction_unknown_codes() -> None:
    # a tentative warning never outranks a critical finding it might explain
    given = [f("grad_overflow_no_scaler", 5), f("nonfinite_loss", 5, "warning")]
    assert explain(given) == given
    # too far apart, unless the sampling interval is that coarse
    far = [f("grad_overflow_no_scaler", 50), f("nonfinite_input", 5)]
    assert codes(rank(far)) == ["nonfinite_input", "grad_overflow_no_scaler"]  # the earlier step, as before
    assert not explain(far)[1].evidence[-1].startswith("follows")
    assert explain(far, every=100)[1].evidence[-1].startswith("follows from nonfinite_input at step 5")
    # a cause seen after its effect: only localisation, which runs one iteration late, may be
    assert codes(rank([f("loss_scale_collapse", 5), f("nonfinite_forward", 6)]))[0] == "nonfinite_forward"
    assert codes(rank([f("grad_overflow_no_scaler", 5), f("nonfinite_loss", 6)]))[0] == "grad_overflow_no_scaler"
    # codes outside the graph, and unknown steps, are never moved
    other = [f("x", 1), f("loss_scale_collapse", 3), f("nonfinite_forward", None)]
    assert explain(other) == other


def test_the_graph_points_one_way() -> None:
    """Every edge goes down one order of the codes: no cycle, so a cause is always placed first."""
    order = list(EXPLAINS)
    for cause, effects in EXPLAINS.items():
        for effect in effects:
            assert effect not in order or order.index(effect) > order.index(cause), (cause, effect)
