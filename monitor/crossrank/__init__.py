"""A run across its ranks: findings no single rank can make, and which rank broke first.

`compare_ranks(histories)` takes one History per rank of the same run (run records, or Prometheus
series per rank) and returns cross-rank Findings: `nonfinite_rank_first`, `nonfinite_all_ranks`,
`grad_norm_rank_divergence`. Pure functions, like the per-rank rules; no collective in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..findings import Finding, rank
from ..history import History
from . import divergence, nonfinite
from .firsts import RankFirst, first_nonfinite

__all__ = ["RankFirst", "compare_ranks", "first_nonfinite", "rank_lines"]

log = logging.getLogger("monitor.diagnosis")

RULES = (("nonfinite_ranks", nonfinite.rule), ("grad_norm_rank_divergence", divergence.rule))


def compare_ranks(histories: Sequence[History]) -> list[Finding]:
    """Cross-rank findings, most severe first; a failing rule is logged and skipped."""
    out: list[Finding] = []
    for name, rule in RULES:
        try:
            out += rule(histories)
        except Exception:  # the diagnosis never fails because one rule did
            log.exception("slat-monitor: cross-rank rule %s failed", name)
    return rank(out)


def rank_lines(histories: Sequence[History]) -> list[str]:
    """One line per rank, earliest break first: "rank 1: first non-finite at step 2 (loss = nan) - first"."""
    firsts = sorted((first_nonfinite(h) for h in histories),
                    key=lambda f: (f.local_step if f.local_step is not None else float("inf"),
                                   f.any_step if f.any_step is not None else float("inf"), f.rank))
    first_step = next((f.local_step for f in firsts if f.local_step is not None), None)
    lines = []
    for f in firsts:
        if f.any_step is None:
            lines.append(f"rank {f.rank}: nothing non-finite seen")
            continue
        mark = " <- broke first" if first_step is not None and f.local_step == first_step else ""
        lines.append(f"rank {f.rank}: first non-finite at step {f.any_step} ({f.any_what}){mark}")
    return lines
