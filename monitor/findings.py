"""Findings: what the diagnosis concluded, with the evidence and the fixes (ARCHITECTURE.md contract)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["FIX_KINDS", "FIX_WHERE", "SEVERITIES", "Finding", "Fix", "rank"]

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
FIX_KINDS: tuple[str, ...] = ("eps", "amsgrad", "lr", "warmup", "dtype", "scaler", "clip", "loss_eps")
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


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, the earliest step first; stable otherwise."""

    def key(f: Finding) -> tuple[int, float]:
        step = f.first_step if f.first_step is not None else float("inf")
        return SEVERITIES.index(f.severity), step

    return sorted(findings, key=key)
