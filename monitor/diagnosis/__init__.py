"""Diagnosis: pure rules over a History -> Findings. (Being built: see issue 4.)"""

from __future__ import annotations

from ..findings import Finding, rank
from ..history import History

__all__ = ["diagnose", "run_rules"]


def run_rules(history: History) -> list[Finding]:
    """Every rule over `history`, ranked most severe first."""
    return rank(list(history.preflight))


def diagnose(source: object) -> list[Finding]:
    """Findings for a Watcher, a run-record path, or a Prometheus URL."""
    if hasattr(source, "history"):
        return run_rules(source.history())
    from ..record import read_record

    return run_rules(read_record(str(source)))
