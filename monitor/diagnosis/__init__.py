"""Diagnosis: pure rules over a History -> ranked Findings, shared by the watcher, the CLI, the alerts
and the triage page.

One rule per module (`rule(history) -> list[Finding]`, no torch / SQLite / HTTP); `run_rules` runs
them all in isolation, merges per code and ranks. `diagnose(source)` loads a History from a Watcher,
a run record path or a Prometheus URL first (see `load_history`).
"""

from __future__ import annotations

from ..findings import Finding
from .engine import RULES, run_rules
from .source import load_history

__all__ = ["RULES", "diagnose", "load_history", "run_rules"]


def diagnose(source: object, *, run: str | None = None, rank: int | None = None) -> list[Finding]:
    """Findings, most severe first, for a Watcher (anything with `.history()`), a History, a run-record
    path, or a Prometheus base URL (http://...; `run` / `rank` select the series).

    Raises monitor.errors.RecordError for a missing or non-record file and SourceError for an
    unreachable Prometheus or an unknown run; never raises for a failing rule.
    """
    return run_rules(load_history(source, run=run, rank=rank))
