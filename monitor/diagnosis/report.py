"""Presenting findings: plain text for people (the CLI), a dict for machines (--json)."""

from __future__ import annotations

import textwrap
from typing import Any

from ..findings import Finding
from ..history import History

__all__ = ["exit_status", "to_json", "to_text"]


def exit_status(findings: list[Finding]) -> int:
    """1 when any finding is critical, else 0 (warnings and infos leave a run 'healthy')."""
    return 1 if any(f.severity == "critical" for f in findings) else 0


def _summary(history: History) -> dict[str, Any]:
    return {"run": history.run.run, "rank": history.run.rank, "steps_observed": len(history.steps),
            "last_step": history.last_step}


def to_json(findings: list[Finding], history: History) -> dict[str, Any]:
    """{"run", "rank", "steps_observed", "last_step", "status", "findings": [Finding.to_dict()]}."""
    status = "critical" if exit_status(findings) else ("warning" if findings else "healthy")
    return {**_summary(history), "status": status, "findings": [f.to_dict() for f in findings]}


def _finding_text(n: int, f: Finding) -> list[str]:
    step = "before step 1 (pre-flight)" if f.first_step == 0 else (
        f"first seen at step {f.first_step}" if f.first_step is not None else "step unknown")
    lines = [f"{n}. [{f.severity.upper()}] {f.code}: {f.title}", f"   {step}"]
    if f.layers:
        more = f" (+{len(f.layers) - 8} more)" if len(f.layers) > 8 else ""
        lines.append(f"   layers: {', '.join(f.layers[:8])}{more}")
    lines.append("   evidence:")
    lines += [textwrap.fill(e, 110, initial_indent="     - ", subsequent_indent="       ") for e in f.evidence]
    if f.fixes:
        lines.append("   fixes, best first:")
    for k, fix in enumerate(f.fixes, 1):
        lines.append(textwrap.fill(f"({k}) [{fix.kind}] {fix.summary}", 110, initial_indent="     ",
                                   subsequent_indent="         "))
        lines += [f"         {line}" for line in fix.snippet.splitlines()]
    return lines


def to_text(findings: list[Finding], history: History) -> str:
    """A readable report: one block per finding, most severe first."""
    s = _summary(history)
    head = (f"slat-monitor diagnose: run {s['run']!r} rank {s['rank']}, {s['steps_observed']} steps observed "
            f"(last step {s['last_step']})")
    if not findings:
        return head + "\nhealthy: no findings.\n"
    counts = {sev: sum(f.severity == sev for f in findings) for sev in ("critical", "warning", "info")}
    lines = [head, ", ".join(f"{n} {sev}" for sev, n in counts.items() if n), ""]
    for n, f in enumerate(findings, 1):
        lines += _finding_text(n, f) + [""]
    return "\n".join(lines).rstrip() + "\n"
