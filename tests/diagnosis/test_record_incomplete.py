"""record_incomplete over hand-built histories: the record's own events -> which steps it lacks, and why."""

from __future__ import annotations

from monitor.diagnosis import run_rules
from monitor.diagnosis.record_incomplete import rule
from monitor.history import Event
from monitor.record.gaps import Gaps, record_events

from .histories import FP32_MODEL, healthy, run_info


def gap(first: int, last: int, n: int, reason: str = "database is locked") -> Event:
    return Event(first, "record_gap", None, None, {"first": first, "last": last, "observations": n, "reason": reason})


def test_missing_steps_are_a_warning_naming_them():
    h = healthy(run_info(FP32_MODEL, eps=1e-8), steps=30)
    h.steps = [s for s in h.steps if not 12 <= s.step <= 14]
    h.events += [gap(12, 14, 3, "OperationalError: database or disk is full")]
    [f] = run_rules(h)  # a healthy run otherwise: this is the only finding, and the run is not "healthy"
    assert (f.code, f.severity, f.first_step) == ("record_incomplete", "warning", 12)
    assert "3 observation(s) (steps 12-14)" in f.title
    assert "steps 12-14: 3 observation(s) not in the record - OperationalError: database or disk is full" in f.evidence


def test_not_closed_alone_is_info_and_gaps_win():
    h = healthy(run_info(FP32_MODEL, eps=1e-8), steps=5)
    h.events += [Event(5, "record_unclosed", None, None, {"last_step": 5})]
    [f] = rule(h)
    assert (f.severity, f.first_step) == ("info", 5) and "not closed (last step in it: 5)" in f.evidence[0]
    h.events += [gap(2, 2, 1), gap(4, 4, 1, "written to the record file that was removed before step 5")]
    [f] = rule(h)
    assert f.severity == "warning" and f.first_step == 2 and len(f.evidence) == 4  # 2 gaps, the note, unclosed


def test_many_gaps_are_summed_up():
    h = healthy(steps=3)
    h.events += [gap(s, s, 1) for s in range(10, 30, 2)]
    [f] = rule(h)
    assert "10 observation(s) (steps 10-28)" in f.title
    assert "5 more gap(s) between steps 20 and 28: 5 observation(s)" in f.evidence


def test_a_complete_closed_record_is_quiet():
    assert rule(healthy(steps=10)) == []


def test_gaps_bookkeeping_to_events():
    """The writer's bookkeeping: lost observations in a row with one reason are one span; a lost file
    turns what it held into a span; the meta round-trips into the events the rule reads."""
    g = Gaps()
    for s in (1, 2, 3):
        g.written(s)
    g.lost(4, "locked")
    g.lost(5, "locked")
    g.lost(6, "full")
    g.written(7)
    g.lost(8, "full")
    g.file_lost("removed")
    events = record_events({"missing": g.to_meta(), "closed": {}}, 2, 9)
    assert [(e.detail["first"], e.detail["last"], e.detail["observations"], e.detail["reason"]) for e in events] == [
        (1, 7, 4, "removed"), (4, 5, 2, "locked"), (6, 6, 1, "full"), (8, 8, 1, "full")]
    assert record_events({}, 2, 9) == [Event(9, "record_unclosed", None, None, {"last_step": 9})]
    assert record_events({}, 1, 9) == []  # schema 1 wrote no clean-close marker
