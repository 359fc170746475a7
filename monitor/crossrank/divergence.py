"""Ranks whose global gradient norms differ on the same step, after DDP's all-reduce made them equal.

After the all-reduce every data-parallel replica holds the same gradients, so the global grad norm
each rank computes is the same number (bitwise on identical hardware). A rank whose norm differs on a
step where the ranks agreed before points at silent data corruption (a bit flip, a faulty GPU) or at
non-deterministic gradient code after the all-reduce. Needs no collective: the exported per-rank norms
(run records or Prometheus) are compared. Ranks that never agreed are not replicas and are not compared.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..findings import Finding
from ..history import History

__all__ = ["RTOL", "rule"]

RTOL = 1e-5  # relative spread tolerated (reduction order on different GPU models); DDP on one kind: 0


def _norms(histories: Sequence[History]) -> dict[int, dict[int, float]]:
    """step -> {rank: global grad norm} for steps where at least two ranks measured a finite norm. The
    norm optimizer.step() received is compared where known (it also sees gradients changed after the
    all-reduce and after backward); else the global norm read at the end of backward."""
    by_step: dict[int, dict[int, float]] = {}
    for h in histories:
        for s in h.steps:
            norm = s.grad_norm_applied if s.grad_norm_applied is not None else s.grad_norm_total
            if s.sampled and norm is not None and math.isfinite(norm):
                by_step.setdefault(s.step, {})[h.run.rank] = norm
    return {k: v for k, v in sorted(by_step.items()) if len(v) > 1}


def _agree(norms: dict[int, float], rtol: float) -> bool:
    hi, lo = max(norms.values()), min(norms.values())
    return hi - lo <= rtol * max(abs(hi), 1e-30)


def _finding(step: int, norms: dict[int, float], later: list[bool], rtol: float) -> Finding:
    median = statistics.median(norms.values())
    spread = {r: abs(v - median) for r, v in norms.items()}
    odd = ", ".join(str(r) for r, d in sorted(spread.items()) if d == max(spread.values()))
    relative = (max(norms.values()) - min(norms.values())) / max(abs(median), 1e-30)
    per_rank = ", ".join(f"rank {r} {v:.9g}" for r, v in sorted(norms.items()))
    return Finding(
        code="grad_norm_rank_divergence", severity="critical", first_step=step,
        title=f"Global gradient norms differ across ranks at step {step} (rank {odd} off the others) although "
              "DDP's all-reduce makes them equal: silent data corruption or non-deterministic gradient code "
              "after the all-reduce",
        evidence=[f"step {step}: {per_rank} (relative spread {relative:.3g}, tolerance {rtol:g})",
                  f"the ranks agreed on every compared step before {step}",
                  f"{sum(later)} of {len(later)} compared steps from step {step} on differ"])


def rule(histories: Sequence[History], rtol: float = RTOL) -> list[Finding]:
    """`grad_norm_rank_divergence` (critical): the first step, after at least one agreeing step, where
    the ranks' global grad norms differ by more than `rtol` relative; names the rank(s) off the median."""
    steps = _norms(histories)
    agreed = False
    for step, norms in steps.items():
        if _agree(norms, rtol):
            agreed = True
        elif not agreed:
            return []  # never equal from the first compared step: not data-parallel replicas
        else:
            later = [not _agree(n, rtol) for s, n in steps.items() if s >= step]
            return [_finding(step, norms, later, rtol)]
    return []
