"""Findings: what the diagnosis concluded, with the evidence and the fixes (ARCHITECTURE.md contract)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["FIX_KINDS", "SEVERITIES", "Finding", "Fix", "rank"]

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
FIX_KINDS: tuple[str, ...] = ("eps", "amsgrad", "lr", "warmup", "dtype", "scaler", "clip", "loss_eps", "betas")


@dataclass(frozen=True)
class Fix:
    """One remedy: `kind` (one of FIX_KINDS), a one-line `summary`, and a code `snippet` for the user's setup."""

    kind: str
    summary: str
    snippet: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FIX_KINDS:
            raise ValueError(f"Fix.kind must be one of {FIX_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Finding:
    """A diagnosed problem. `evidence` holds human-readable lines with the numbers that triggered it;
    `first_step` is the optimizer step it was first seen at (0: before the first step, i.e. pre-flight);
    `layers` are module paths; `fixes` are ranked, best first."""

    code: str
    severity: str
    title: str
    evidence: tuple[str, ...] = ()
    first_step: int | None = None
    layers: tuple[str, ...] = ()
    fixes: tuple[Fix, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {SEVERITIES}, got {self.severity!r}")
        # Accept lists from callers but keep the object immutable and hashable.
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "fixes", tuple(self.fixes))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["layers"] = list(self.layers)
        d["fixes"] = [asdict(f) for f in self.fixes]
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
        )


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, the earliest step first; stable otherwise."""

    def key(f: Finding) -> tuple[int, float]:
        step = f.first_step if f.first_step is not None else float("inf")
        return SEVERITIES.index(f.severity), step

    return sorted(findings, key=key)
