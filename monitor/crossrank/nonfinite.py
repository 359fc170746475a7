"""Which rank broke first: one rank going non-finite before the others (bad batch, faulty device) is
told apart from every rank at once (the model's numerics)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..findings import Finding
from ..history import History
from .firsts import RankFirst, first_nonfinite, loss_at

__all__ = ["rule"]


def _ranks(ranks: Sequence[int]) -> str:
    return ", ".join(str(r) for r in sorted(ranks))


def _other_line(h: History, f: RankFirst, step: int) -> str:
    loss = loss_at(h, step)
    seen = "no loss observed" if loss is None else f"loss {loss:.6g}"
    if loss is not None and not math.isfinite(loss):
        seen = f"loss {loss}"
    later = (f"; its first non-finite sign: {f.any_what} at step {f.any_step}" if f.any_step is not None
             else "; nothing non-finite seen on it")
    via = " (reached it through DDP's all-reduce)" if f.any_step == step and f.local_step != step else ""
    return f"rank {f.rank}: finite at step {step} ({seen}){later}{via}"


def rule(histories: Sequence[History]) -> list[Finding]:
    """`nonfinite_rank_first` (critical) when some ranks' loss/activations went non-finite at a step where
    the others' stayed finite; `nonfinite_all_ranks` (warning) when every rank went at the same step."""
    firsts = {h.run.rank: (h, first_nonfinite(h)) for h in histories}
    local = {r: f.local_step for r, (_, f) in firsts.items() if f.local_step is not None}
    if len(firsts) < 2 or not local:
        return []
    step = min(local.values())
    broke = sorted(r for r, s in local.items() if s == step)
    others = sorted(r for r in firsts if r not in broke)
    lines = [f"rank {r}: {firsts[r][1].local_what} at step {step}" for r in broke]
    if not others:
        return [Finding(
            code="nonfinite_all_ranks", severity="warning", first_step=step,
            title=f"Every rank ({_ranks(broke)}) went non-finite at the same step {step}: the model's "
                  "numerics, not one rank's data or device - see each rank's own findings",
            evidence=lines)]
    lines += [_other_line(firsts[r][0], firsts[r][1], step) for r in others]
    return [Finding(
        code="nonfinite_rank_first", severity="critical", first_step=step,
        title=f"Rank {_ranks(broke)} went non-finite first, at step {step}, while rank {_ranks(others)} stayed "
              f"finite: a bad batch or a faulty device on rank {_ranks(broke)}, not the model's numerics",
        evidence=lines + ["under DDP the gradients are all-reduced, so every rank then shares the non-finite "
                          "gradients; the loss and activations are each rank's own and show where it began"])]
