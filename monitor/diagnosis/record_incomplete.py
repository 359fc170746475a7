"""record_incomplete: the run record does not hold the whole run, so the diagnosis of it cannot either.

Reads the events the record (or the live writer) gives about itself (monitor/record/gaps.py):
- `record_gap` (observations that could not be written: which steps, how many, why) -> warning, first
  step = the first missing one; evidence per gap;
- `record_unclosed` alone (a schema-2 record without its clean-close marker: the run is still going, or
  its process ended without close() - a crash, SIGKILL, a disk full to the end) -> info, first step =
  the last step in the record: observations queued after it may be missing.
No layers, no fixes (nothing in the training set-up to change; see the evidence for what to look at).
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding
from ..history import Event, History

__all__ = ["CODE", "rule"]

CODE = "record_incomplete"
_SHOWN = 5  # gaps listed one by one; the rest summed up


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _gap(e: Event) -> tuple[int, int, int, str] | None:
    """(first step, last step, observations, reason) of a record_gap event; the event's step is the first."""
    d = e.detail if isinstance(e.detail, dict) else {}
    first, last, n = _int(e.step), _int(d.get("last")), _int(d.get("observations"))
    if first is None or n is None:
        return None
    return first, max(first, last if last is not None else first), n, str(d.get("reason") or "reason unknown")


def _gap_lines(gaps: list[tuple[int, int, int, str]]) -> list[str]:
    lines = []
    for first, last, n, reason in gaps[:_SHOWN]:
        steps = f"step {first}" if first == last else f"steps {first}-{last}"
        lines.append(f"{steps}: {n} observation(s) not in the record - {reason}")
    if len(gaps) > _SHOWN:
        rest = gaps[_SHOWN:]
        lines.append(f"{len(rest)} more gap(s) between steps {rest[0][0]} and {max(g[1] for g in rest)}: "
                     f"{sum(g[2] for g in rest)} observation(s)")
    lines.append("what happened in the missing steps is not diagnosed here: a Prometheus that scraped the run "
                 "has its series (slat-monitor diagnose --prometheus URL); slatmon_record_errors_total counts "
                 "the losses")
    return lines


def _unclosed_line(e: Event) -> str:
    last = _int(e.detail.get("last_step")) if isinstance(e.detail, dict) else None
    at = f" (last step in it: {last})" if last is not None else ""
    return (f"the record was not closed{at}: the run is still going, or its process ended without close() "
            "(a crash, SIGKILL, a full disk); observations queued but not yet written at that moment are missing")


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    gaps = sorted(g for e in history.events if e.kind == "record_gap" and (g := _gap(e)) is not None)
    unclosed = [e for e in history.events if e.kind == "record_unclosed"]
    if not gaps and not unclosed:
        return []
    lines = _gap_lines(gaps) if gaps else []
    lines += [_unclosed_line(e) for e in unclosed[:1]]
    if not gaps:  # first_step: the last step in the record, after which observations may be missing
        last = _int(unclosed[0].step)
        return [Finding(CODE, "info", "The run record was not closed cleanly: its end may be missing", lines, last)]
    n = sum(g[2] for g in gaps)
    first, last = gaps[0][0], max(g[1] for g in gaps)
    where = f"step {first}" if first == last else f"steps {first}-{last}"
    return [Finding(CODE, "warning", f"The run record is missing {n} observation(s) ({where})", lines, first)]
