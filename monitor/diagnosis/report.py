"""Presenting findings: plain text for people (the CLI, the demo), a dict for machines (--json).

The text is short by default: the top finding with its first evidence lines and the code of its first
fix, every other finding as its title and the first sentence of each fix; a fix offered twice is
printed once ("same fix as 1(1)"). `verbose=True` prints every evidence line, the per-layer details,
every summary and every snippet. Every name is escaped for the terminal (`monitor.terminal`).
"""

from __future__ import annotations

import textwrap
from typing import Any

from ..findings import Finding, Fix
from ..history import History
from ..terminal import printable

__all__ = ["exit_status", "findings_text", "headline", "to_json", "to_text"]

WIDTH = 100
TOP_EVIDENCE = 2  # evidence lines of the top finding shown without --verbose


def exit_status(findings: list[Finding]) -> int:
    """1 when any finding is critical, else 0 (warnings and infos leave a run 'healthy')."""
    return 1 if any(f.severity == "critical" for f in findings) else 0


def _summary(history: History) -> dict[str, Any]:
    return {"run": history.run.run, "rank": history.run.rank, "steps_observed": len(history.steps),
            "last_step": history.last_step}


def to_json(findings: list[Finding], history: History) -> dict[str, Any]:
    """{"run", "rank", "steps_observed", "last_step", "status", "findings": [Finding.to_dict()]}: everything,
    per-layer `details` and every snippet included."""
    status = "critical" if exit_status(findings) else ("warning" if findings else "healthy")
    return {**_summary(history), "status": status, "findings": [f.to_dict() for f in findings]}


def headline(summary: str) -> str:
    """The first sentence of a fix summary (up to ". " outside parentheses)."""
    depth = 0
    for i, ch in enumerate(summary):
        depth += (ch == "(") - (ch == ")")
        if ch == "." and depth == 0 and summary[i + 1:i + 2] in (" ", ""):
            return summary[:i + 1]
    return summary


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(printable(text), WIDTH, initial_indent=indent if first is None else first,
                         subsequent_indent=indent + "  ", break_on_hyphens=False) or [indent]


def _when(f: Finding) -> str:
    if f.first_step == 0:
        return "before step 1"
    return f"step {f.first_step}" if isinstance(f.first_step, int) else "step unknown"


class _Fixes:
    """Fix labels across findings: the first finding that offers a snippet owns it ("1(2)")."""

    def __init__(self) -> None:
        self.owner: dict[tuple[str, str, str], str] = {}

    def seen(self, fix: Fix, label: str) -> str | None:
        key = (fix.kind, fix.where, fix.snippet)
        if not fix.snippet:
            return None
        if key in self.owner:
            return self.owner[key]
        self.owner[key] = label
        return None


def _fix_lines(n: int, f: Finding, labels: _Fixes, verbose: bool, top: bool) -> list[str]:
    """Each fix: its first sentence (all of it with `verbose`), the code of the top finding's first fix
    (of every fix with `verbose`); a fix printed before is only referred to; a warning's fixes are only
    named unless `verbose`."""
    lines: list[str] = []
    brief, named = [], []
    for k, fix in enumerate(f.fixes, 1):
        owner = labels.seen(fix, f"{n}({k})")
        if owner is not None:
            brief.append(f"({k}) same fix as {owner}")
        elif not (verbose or top or f.severity == "critical"):
            named.append(f"({k}) [{fix.kind}]")
        else:
            text = fix.summary if verbose else headline(fix.summary)
            lines += _wrap(f"fix ({k}) [{fix.kind}] {text}", "   ")
            if fix.snippet and (verbose or (top and k == 1)):
                lines += ["       " + printable(line) for line in fix.snippet.splitlines()]
    if named:
        brief.append(", ".join(named) + " (--verbose)")
    if brief:
        lines += _wrap("; ".join(brief), "     ", "   fixes: " if not lines else "   also: ")
    return lines


def _finding_lines(n: int, f: Finding, labels: _Fixes, verbose: bool) -> list[str]:
    top = n == 1
    lines = _wrap(f"{n}. [{f.severity.upper()}] {f.code}, {_when(f)}: {f.title}", "   ", "")
    shown = f.evidence if verbose else (f.evidence[:TOP_EVIDENCE] if top else ())
    for e in shown:
        lines += _wrap(e, "     ", "   - ")
    if verbose and f.details:
        lines.append("   per layer:")
        lines += [line for d in f.details for line in _wrap(d, "       ", "     - ")]
    if verbose and f.layers:
        lines += _wrap(f"layers: {', '.join(f.layers)}", "     ", "   ")
    return lines + _fix_lines(n, f, labels, verbose, top)


def findings_text(findings: list[Finding], verbose: bool = False) -> list[str]:
    """The findings block, most severe first (see the module docstring)."""
    if not findings:
        return ["healthy: no findings."]
    counts = {sev: sum(f.severity == sev for f in findings) for sev in ("critical", "warning", "info")}
    head = f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ("
    head += ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) + ")"
    lines = [head + ("" if verbose else "; every evidence line and snippet: --verbose")]
    labels = _Fixes()
    for n, f in enumerate(findings, 1):
        lines += _finding_lines(n, f, labels, verbose)
    return lines


def to_text(findings: list[Finding], history: History, verbose: bool = False) -> str:
    """A readable report: the run, then the findings block."""
    s = _summary(history)
    head = (f"slat-monitor diagnose: run {printable(repr(s['run']))} rank {s['rank']}, {s['steps_observed']} steps "
            f"observed (last step {s['last_step']})")
    return "\n".join([head, *findings_text(findings, verbose)]) + "\n"
