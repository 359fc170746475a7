"""Cause before consequence: when one finding explains another, it ranks first and the other says so.

`EXPLAINS` is the causal graph between finding codes (a cause's code -> the codes it can produce). A
finding A explains B when A's code lists B's, B's first step lies within the window after A's
(window: WINDOW steps, or the sampling interval when that is longer; a cause found by localisation,
which runs one iteration after the event, may be up to LATE steps after B's start), and A is at least
as severe as B (a tentative warning never outranks a critical finding). `order()` keeps the base
ranking (severity, step, rule order) except that each finding's causes are moved right before it;
each explained finding keeps its own severity and gains the line "follows from <code> at step N".

The order of codes, root causes first: bad data (nonfinite_input); too large updates (lr_too_high ->
grad_explosion); the optimizer's own arithmetic (adam_eps_underflow); a module overflowing
(nonfinite_forward); the loss itself (nonfinite_loss); what non-finite activations or losses do to the
gradients (grad_overflow_no_scaler) and to the loss scale (loss_scale_collapse); a non-finite update
(nonfinite_after_update); the catch-all invariant (nonfinite_values). Edges only point down this list,
so the graph has no cycle. Codes not listed (warnings about trends, pre-flight lints) are never moved.
"""

from __future__ import annotations

import dataclasses

from ..findings import SEVERITIES, Finding

__all__ = ["EXPLAINS", "LATE", "WINDOW", "explains", "order"]

WINDOW = 10
LATE = {"nonfinite_forward": 3}  # localised on the iteration after the event (nonfinite_loss's LOOKAHEAD)

_NONFINITE = ("nonfinite_forward", "nonfinite_loss", "grad_overflow_no_scaler", "loss_scale_collapse",
              "nonfinite_values")
EXPLAINS: dict[str, tuple[str, ...]] = {
    "nonfinite_input": ("grad_explosion", *_NONFINITE),
    "lr_too_high": ("grad_explosion", *_NONFINITE),
    "grad_explosion": _NONFINITE,
    "adam_eps_underflow": ("nonfinite_after_update", "nonfinite_values"),
    "nonfinite_forward": _NONFINITE[1:],
    "nonfinite_loss": _NONFINITE[2:],
    "grad_overflow_no_scaler": ("nonfinite_values",),
    "loss_scale_collapse": ("nonfinite_values",),
    "nonfinite_after_update": ("nonfinite_values",),
}


def explains(cause: Finding, effect: Finding, window: int = WINDOW) -> bool:
    """Whether `cause` explains `effect` (see the module docstring)."""
    if effect.code not in EXPLAINS.get(cause.code, ()):
        return False
    if cause.first_step is None or effect.first_step is None:
        return False
    if SEVERITIES.index(cause.severity) > SEVERITIES.index(effect.severity):
        return False
    lag = effect.first_step - cause.first_step
    return -LATE.get(cause.code, 0) <= lag <= window


def order(findings: list[Finding], every: int = 1) -> list[Finding]:
    """`findings` (ranked) with every cause right before the first finding it explains; explained
    findings gain "follows from <code> at step N" (the cause ranked first)."""
    window = max(WINDOW, every if isinstance(every, int) else 1)
    causes = {i: [j for j, c in enumerate(findings) if j != i and explains(c, f, window)]
              for i, f in enumerate(findings)}
    placed: list[int] = []

    def place(i: int) -> None:
        if i in placed:
            return
        for j in causes[i]:
            place(j)
        if i not in placed:
            placed.append(i)

    for i in range(len(findings)):
        place(i)
    out = []
    for i in placed:
        f = findings[i]
        if causes[i]:
            root = findings[min(causes[i], key=placed.index)]
            line = f"follows from {root.code} at step {root.first_step}: ranked after the finding that explains it"
            f = dataclasses.replace(f, evidence=(*f.evidence, line))
        out.append(f)
    return out
