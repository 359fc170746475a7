"""Plain-text reports for the terminal: per-step lines, the run summary, and findings with their fixes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monitor.terminal import printable

from .stats import StepRecord

__all__ = ["format_findings", "format_step", "format_summary"]


def format_step(s: StepRecord) -> str:
    """One line per step: loss, scale, skip, non-finite parameter count."""
    parts = [f"step {s.step:>4}", f"loss {s.loss:.5g}"]
    if s.loss_scale is not None:
        parts.append(f"scale 2^{math.log2(s.loss_scale):.2f}")
    if s.skipped:
        parts.append("SKIPPED")
    if s.nonfinite_params:
        parts.append(f"non-finite params {len(s.nonfinite_params)}")
    return "  ".join(parts)


def _first(steps: Sequence[StepRecord], pred: Any) -> int | None:
    return next((s.step for s in steps if pred(s)), None)


def format_summary(result: Any) -> str:
    """The trainer's own account of a RunResult (independent of the monitor)."""
    cfg, steps = result.config, result.steps
    ms = 1000 * result.seconds / max(len(steps), 1)
    lines = [
        f"run: config={cfg.config} precision={result.precision} fault={cfg.fault} eps={result.eps:g} "
        f"lr={cfg.lr:g} device={result.device}: {len(steps)} steps, {ms:.0f} ms/step",
    ]
    bad_loss = _first(steps, lambda s: not math.isfinite(s.loss))
    bad_param = _first(steps, lambda s: s.nonfinite_params)
    skipped = sum(s.skipped for s in steps)
    if bad_loss is not None:
        lines.append(f"  first non-finite loss at step {bad_loss}")
    if bad_param is not None:
        names = next(s.nonfinite_params for s in steps if s.step == bad_param)
        example = printable(names[0])
        lines.append(f"  parameters non-finite after step {bad_param}: {len(names)} tensors, e.g. {example}")
    if skipped:
        lines.append(f"  {skipped} optimizer steps skipped by the loss scaler")
    finite = [s.loss for s in steps if math.isfinite(s.loss)]
    if finite:
        lines.append(f"  loss: first {steps[0].loss:.5g}, last {steps[-1].loss:.5g}, min finite {min(finite):.5g}")
    return "\n".join(lines)


def format_findings(findings: Sequence[Any] | None, verbose: bool = False) -> str:
    """Findings (monitor.Finding) as `slat-monitor diagnose` prints them: short by default (the top finding's
    evidence and first fix in full, one line per other fix), everything with `verbose`."""
    if findings is None:
        return "diagnosis: the run was not watched (pass --watch)"
    if not findings:
        return "diagnosis: no findings"
    from monitor.diagnosis.report import findings_text

    lines = findings_text(list(findings), verbose)
    return "\n".join([f"diagnosis: {lines[0]}", *lines[1:]])
