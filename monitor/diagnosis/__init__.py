"""Diagnosis: pure rules over a History -> ranked Findings, shared by the watcher, the CLI, the alerts
and the triage page.

One rule per module (`rule(history) -> list[Finding]`, no torch / SQLite / HTTP); `run_rules` runs
them all in isolation, merges per code and ranks. `diagnose(source)` loads a History from a Watcher,
a run record path or a Prometheus URL first (see `load_history`).
"""

from __future__ import annotations

import dataclasses

from ..findings import Finding
from ..history import History
from .engine import RULES, run_rules
from .source import load_history

__all__ = ["RULES", "diagnose", "load_history", "run_rules"]


def diagnose(source: object, *, run: str | None = None, rank: int | None = None) -> list[Finding]:
    """Findings, most severe first, for a Watcher (anything with `.history()`), a History, a run-record
    path, or a Prometheus base URL (http://...; `run` / `rank` select the series).

    Raises monitor.errors.RecordError for a missing or non-record file and SourceError for an
    unreachable Prometheus or an unknown run; never raises for a failing rule.
    """
    history = load_history(source, run=run, rank=rank)
    findings = run_rules(history)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return [coarser_view(f, history) for f in findings]
    return findings


def coarser_view(finding: Finding, history: History) -> Finding:
    """`finding` with a line saying how much of the run the Prometheus scrapes saw, when not every step."""
    seen, last = len(history.steps), history.last_step
    if not last or seen >= last:
        return finding
    note = (f"Prometheus view: {seen} of {last} steps were scraped; steps between scrapes are not in it "
            "(the run record has every sampled and skipped step)")
    return dataclasses.replace(finding, evidence=(*finding.evidence, note))
