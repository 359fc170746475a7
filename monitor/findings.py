"""Findings: what the diagnosis concluded, with the evidence and the fixes (ARCHITECTURE.md contract), and
how they are ranked: by severity and step, a cause before the consequences it explains."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

__all__ = ["EXPLAINS", "FIX_KINDS", "FIX_WHERE", "SEVERITIES", "Finding", "Fix", "explain", "explains", "rank"]

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
FIX_KINDS: tuple[str, ...] = ("eps", "amsgrad", "lr", "warmup", "dtype", "scaler", "clip", "loss_eps", "data",
                             "betas")
# where a snippet goes (docs/diagnosis.md, "The snippet contract"); "setup+iteration" snippets hold both
# sections, each under its fixed header line (monitor.diagnosis.snippets)
FIX_WHERE: tuple[str, ...] = ("setup", "iteration", "setup+iteration", "loss")


@dataclass(frozen=True)
class Fix:
    """One remedy: `kind` (one of FIX_KINDS), a `summary` (its first sentence says what it does), and a
    code `snippet` for the user's setup.

    `where` says where the snippet runs (the snippet contract, docs/diagnosis.md):
    - "setup": once, after `model`, `optimizer` and `scaler` (None without one) exist, before the first
      step; it may rebind `optimizer` and `scaler` and define names the iteration section uses.
    - "iteration": one whole training iteration, instead of the loop's forward / backward /
      optimizer.step(): it calls `compute_loss(model, batch)` (the user's forward and loss) and leaves the
      update applied (or skipped) and the gradients cleared.
    - "setup+iteration": both, the iteration part under the line `snippets.ITERATION_HEADER`.
    - "loss": defines guarded functions (`safe_log`, ...) to call in the loss code instead of the raw ops.
    Names a snippet may use: `torch`, `model`, `optimizer`, `scaler`, `batch`, `compute_loss`, and the
    names it defines itself. `mitigates`: the fix eases the symptom without removing its cause (the
    summary says so).
    """

    kind: str
    summary: str
    snippet: str = ""
    where: str = "setup"
    mitigates: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FIX_KINDS:
            raise ValueError(f"Fix.kind must be one of {FIX_KINDS}, got {self.kind!r}")
        if self.where not in FIX_WHERE:
            raise ValueError(f"Fix.where must be one of {FIX_WHERE}, got {self.where!r}")


@dataclass(frozen=True)
class Finding:
    """A diagnosed problem. `evidence` holds human-readable lines with the numbers that triggered it;
    `first_step` is the optimizer step it was first seen at (0: before the first step, i.e. pre-flight);
    `layers` are module paths; `fixes` are ranked, best first. `evidence` is kept short (per-layer lines
    aggregated: count, worst three); `details` holds every per-layer line behind it (`--verbose`)."""

    code: str
    severity: str
    title: str
    evidence: tuple[str, ...] = ()
    first_step: int | None = None
    layers: tuple[str, ...] = ()
    fixes: tuple[Fix, ...] = field(default_factory=tuple)
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {SEVERITIES}, got {self.severity!r}")
        # Accept lists from callers but keep the object immutable and hashable.
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "fixes", tuple(self.fixes))
        object.__setattr__(self, "details", tuple(self.details))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["layers"] = list(self.layers)
        d["fixes"] = [asdict(f) for f in self.fixes]
        d["details"] = list(self.details)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            code=d["code"],
            severity=d["severity"],
            title=d["title"],
            evidence=tuple(d.get("evidence", ())),
            first_step=d.get("first_step"),
            layers=tuple(d.get("layers", ())),
            fixes=tuple(Fix(**f) for f in d.get("fixes", ())),
            details=tuple(d.get("details", ())),
        )


# Cause before consequence: a cause's code -> the codes it can produce, root causes first: bad data;
# too large updates; the optimizer's own arithmetic; a module overflowing; the loss itself; then what
# non-finite activations or losses do to the gradients and to the loss scale; a non-finite update; the
# catch-all invariant. Edges only point down this order (no cycle). Codes not listed are never moved.
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
CAUSE_WINDOW = 10  # steps; or the sampling interval, when longer
LATE = {"nonfinite_forward": 3}  # localised on the iteration after the event (nonfinite_loss's LOOKAHEAD)


def explains(cause: Finding, effect: Finding, every: int = 1) -> bool:
    """Whether `cause` explains `effect`: EXPLAINS has the edge, `effect` began at most CAUSE_WINDOW steps
    (or `every`, when longer) after `cause` - or, for a cause found by localisation, up to LATE steps
    before it - and `cause` is at least as severe (a tentative warning never outranks a critical)."""
    if effect.code not in EXPLAINS.get(cause.code, ()) or cause.first_step is None or effect.first_step is None:
        return False
    if SEVERITIES.index(cause.severity) > SEVERITIES.index(effect.severity):
        return False
    lag = effect.first_step - cause.first_step
    return -LATE.get(cause.code, 0) <= lag <= max(CAUSE_WINDOW, every if isinstance(every, int) else 1)


def _causal(findings: list[Finding], every: int) -> list[tuple[Finding, Finding | None]]:
    """(finding, the cause ranked first among those that explain it) with every cause moved right before
    the first finding it explains."""
    causes = {i: [j for j, c in enumerate(findings) if j != i and explains(c, f, every)]
              for i, f in enumerate(findings)}
    placed: list[int] = []

    def place(i: int) -> None:
        if i not in placed:
            for j in causes[i]:
                place(j)
            if i not in placed:
                placed.append(i)

    for i in range(len(findings)):
        place(i)
    return [(findings[i], findings[min(causes[i], key=placed.index)] if causes[i] else None) for i in placed]


def rank(findings: list[Finding], every: int = 1) -> list[Finding]:
    """Most severe first; within a severity, the earliest step first; stable otherwise; then cause before
    consequence: a finding that explains another (see `explains`) is moved right before it. Idempotent.
    `every`: the sampling interval (widens the window)."""

    def key(f: Finding) -> tuple[int, float]:
        step = f.first_step if f.first_step is not None else float("inf")
        return SEVERITIES.index(f.severity), step

    return [f for f, _ in _causal(sorted(findings, key=key), every)]


def explain(findings: list[Finding], every: int = 1) -> list[Finding]:
    """`rank(findings)`, each explained finding with the evidence line "follows from <code> at step N"
    (its cause ranked first; keeps its own severity). Idempotent."""
    out = []
    for f, cause in _causal(rank(findings, every), every):
        line = f"follows from {cause.code} at step {cause.first_step}: ranked after the finding that explains it" \
            if cause is not None else None
        out.append(f if line is None or line in f.evidence else replace(f, evidence=(*f.evidence, line)))
    return out
