"""Per-layer evidence, aggregated: one line with the count and the worst three layers for
`Finding.evidence`, every layer's own line for `Finding.details` (shown with --verbose, kept in JSON)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["WORST", "LayerLine", "aggregate"]

WORST = 3  # layers named in the summary line


@dataclass(frozen=True)
class LayerLine:
    """One layer's evidence: `value` ranks it (larger = worse), `line` is its full detail line."""

    layer: str
    value: float
    line: str


def aggregate(head: str, items: Sequence[LayerLine], show: Callable[[float], str] = lambda v: f"{v:g}",
              ) -> tuple[str, tuple[str, ...]]:
    """(summary, details): "`head` in N layer(s); worst: a (v), b (v), c (v); N-3 more (--verbose)",
    and every item's line, worst first. `show` formats a value for the summary."""
    ranked = sorted(items, key=lambda i: -i.value)  # stable: equal values keep the caller's (module) order
    named = ", ".join(f"{i.layer} ({show(i.value)})" for i in ranked[:WORST])
    more = f"; {len(ranked) - WORST} more (--verbose)" if len(ranked) > WORST else ""
    label = "worst" if len(ranked) > 1 else "in"
    summary = f"{head} in {len(ranked)} layer{'s' if len(ranked) != 1 else ''}; {label}: {named}{more}"
    return summary, tuple(i.line for i in ranked)
