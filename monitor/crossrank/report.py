"""Presenting a run across its ranks: per-rank diagnoses, then what only the comparison shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..diagnosis.report import exit_status, to_json, to_text
from ..findings import Finding
from ..history import History
from ..terminal import printable
from . import compare_ranks, rank_lines

__all__ = ["RankedRun", "diagnose_ranks", "ranks_json", "ranks_text"]

RankedRun = tuple[list[tuple[History, list[Finding]]], list[Finding]]


def diagnose_ranks(histories: Sequence[History]) -> RankedRun:
    """([(history, its findings) per rank, by rank], cross-rank findings)."""
    from ..diagnosis import run_rules

    per_rank = [(h, run_rules(h)) for h in sorted(histories, key=lambda h: h.run.rank)]
    return per_rank, compare_ranks([h for h, _ in per_rank])


def status(run: RankedRun) -> int:
    """1 when any rank or the comparison has a critical finding, else 0."""
    per_rank, across = run
    return max([exit_status(across)] + [exit_status(f) for _, f in per_rank])


def ranks_text(run: RankedRun, verbose: bool = False) -> str:
    """Which rank broke first, the cross-rank findings, then each rank's report (`to_text`); names from
    the records or Prometheus are escaped for the terminal."""
    per_rank, across = run
    histories = [h for h, _ in per_rank]
    names = sorted({h.run.run for h in histories})
    lines = [f"slat-monitor diagnose: run {', '.join(repr(n) for n in names)} across {len(histories)} ranks", ""]
    lines += ["which rank broke first:"] + [f"  {printable(line)}" for line in rank_lines(histories)] + [""]
    if across:
        lines.append("across ranks:")
        lines += [f"  [{f.severity.upper()}] {printable(f.code)}: {printable(f.title)}" for f in across]
        lines += [f"     - {printable(e)}" for f in across for e in f.evidence]
        lines.append("")
    for h, findings in per_rank:
        lines += ["-" * 78, to_text(findings, h, verbose).rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def ranks_json(run: RankedRun) -> dict[str, Any]:
    """{"ranks": [per-rank to_json], "across_ranks": [Finding.to_dict()], "first": [rank lines]}."""
    per_rank, across = run
    return {"ranks": [to_json(f, h) for h, f in per_rank], "across_ranks": [f.to_dict() for f in across],
            "first": rank_lines([h for h, _ in per_rank]),
            "status": "critical" if status(run) else "healthy"}
