"""run_rules: every rule over a History, isolated, merged and ranked.

A rule that raises is logged (with its traceback, once per rule and message) and skipped: the
diagnosis never fails because one rule did, and never reads as healthy either (a
`diagnosis_incomplete` warning names the rule). Rules run in RULES order, which also breaks ties of
severity and first step. Then cause before consequence (findings.rank / explain): a finding that
explains another (nonfinite_input before the nonfinite_loss it makes, nonfinite_forward before
loss_scale_collapse) ranks right before it, and the other says what it follows from.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from ..findings import SEVERITIES, Finding, explain, rank
from ..history import History
from . import (
    adam_eps_underflow,
    adam_second_moment_lag,
    fp16_no_loss_scale,
    fp16_optimizer_state,
    grad_explosion,
    grad_overflow_no_scaler,
    grad_underflow,
    loss_scale_collapse,
    loss_spike,
    lr_schedule_on_skip,
    lr_too_high,
    nonfinite_after_update,
    nonfinite_forward,
    nonfinite_input,
    nonfinite_loss,
    nonfinite_values,
    record_incomplete,
    update_rounds_away,
)

__all__ = ["INCOMPLETE", "RULES", "Rule", "incomplete", "merge", "run_rules"]

log = logging.getLogger("monitor.diagnosis")

Rule = Callable[[History], list[Finding]]
INCOMPLETE = "diagnosis_incomplete"

RULES: tuple[tuple[str, Rule], ...] = (
    ("nonfinite_input", nonfinite_input.rule),
    ("adam_eps_underflow", adam_eps_underflow.rule),
    ("grad_overflow_no_scaler", grad_overflow_no_scaler.rule),
    ("loss_scale_collapse", loss_scale_collapse.rule),
    ("nonfinite_forward", nonfinite_forward.rule),
    ("nonfinite_loss", nonfinite_loss.rule),
    ("nonfinite_after_update", nonfinite_after_update.rule),
    ("lr_too_high", lr_too_high.rule),
    ("grad_explosion", grad_explosion.rule),
    ("grad_underflow", grad_underflow.rule),
    # a spike ties with a lag seen at its own step: that lag came with the spike's batch (the loss was
    # computed before the update), so the spike ranks first; a lag that warned ahead has the earlier step
    ("loss_spike", loss_spike.rule),
    ("adam_second_moment_lag", adam_second_moment_lag.rule),
    ("update_rounds_away", update_rounds_away.rule),
    ("lr_schedule_on_skip", lr_schedule_on_skip.rule),
    ("fp16_no_loss_scale", fp16_no_loss_scale.rule),
    ("fp16_optimizer_state", fp16_optimizer_state.rule),
    ("record_incomplete", record_incomplete.rule),
)

_logged: set[tuple[str, str]] = set()


def untrusted(finding: Finding) -> Finding:
    """A stored finding (record, Prometheus) no rule re-derived: its fixes keep kind and summary but not
    their snippets, which are code from a file and never offered for pasting or execution."""
    if not any(f.snippet for f in finding.fixes):
        return finding
    return dataclasses.replace(finding, fixes=tuple(dataclasses.replace(f, snippet="") for f in finding.fixes))


def _unique(items: Sequence) -> tuple:
    return tuple(dict.fromkeys(items))


def merge(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per code, in first-seen order: the most severe (then earliest) keeps its title and
    fixes; evidence and layers are the union, first_step the earliest known."""
    by_code: dict[str, list[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    out = []
    for group in by_code.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        best = rank(group)[0]
        steps = [f.first_step for f in group if f.first_step is not None]
        out.append(Finding(
            best.code, min((f.severity for f in group), key=SEVERITIES.index), best.title,
            _unique([e for f in group for e in f.evidence]), min(steps) if steps else None,
            _unique([x for f in group for x in f.layers]), best.fixes,
            _unique([d for f in group for d in f.details])))
    return out


OnError = Callable[[str, Exception], None]


def _run_one(name: str, rule: Rule, history: History, failed: list[tuple[str, Exception]]) -> list[Finding]:
    try:
        result = rule(history)
        return [f for f in result if isinstance(f, Finding)]
    except Exception as exc:  # a broken rule must not take the diagnosis down
        failed.append((name, exc))
        key = (name, str(exc))
        if key not in _logged:
            _logged.add(key)
            log.warning("diagnosis rule %s failed and was skipped: %r", name, exc, exc_info=True)
        return []


def _last_step(history: History) -> int:
    steps = [s.step for s in history.steps if isinstance(getattr(s, "step", None), int)]
    return max(steps, default=0)


def incomplete(title: str, evidence: Sequence[str], step: int) -> Finding:
    """`diagnosis_incomplete` from `step` on: the findings beside it may miss something (a rule failed, or
    the newest steps are not diagnosed yet); a run is never reported healthy on a diagnosis that did not
    complete."""
    return Finding(INCOMPLETE, "warning", title, tuple(evidence), step, (), ())


def run_rules(history: History, rules: Sequence[tuple[str, Rule]] | None = None,
              on_error: OnError | None = None) -> list[Finding]:
    """Every rule over `history` (`rules`: default RULES), merged per code, ranked (most severe, then
    earliest, first; a cause right before the findings it explains, see findings.rank).

    `history.preflight` findings are kept unless a rule produced the same code (the rule saw the same
    RunInfo plus the observed steps, so its finding wins); kept ones lose their fix snippets
    (`untrusted`). Last, `nonfinite_values` adds a finding for non-finite values that nothing above
    explains (never "healthy" while any was seen). Never raises for a rule's failure: the rule is
    skipped, logged once, reported to `on_error(name, exc)`, and a `diagnosis_incomplete` warning names it.
    """
    rules = RULES if rules is None else rules
    failed: list[tuple[str, Exception]] = []
    produced = merge([f for name, rule in rules for f in _run_one(name, rule, history, failed)])
    codes = {f.code for f in produced}
    kept = [untrusted(f) for f in history.preflight if isinstance(f, Finding) and f.code not in codes]
    found = produced + merge(kept)
    found += _run_one("nonfinite_values", lambda h: nonfinite_values.check(h, found), history, failed)
    if failed:
        found.append(incomplete(f"Diagnosis incomplete: rule {', '.join(n for n, _ in failed)} failed",
                                [f"{n}: {type(e).__name__}: {e}"[:300] for n, e in failed], _last_step(history)))
        for name, exc in failed:
            if on_error is not None:
                on_error(name, exc)
    position = {name: i for i, (name, _) in enumerate(rules)}
    found.sort(key=lambda f: position.get(f.code, len(position)))  # ties in RULES order, kept ones too
    return explain(found, getattr(history.run, "every", 1))
