"""Per rank: the first step where something non-finite was seen, and whether it was the rank's own.

Under DDP the gradients are all-reduced: a NaN gradient on one rank is a NaN gradient on every rank
by the time `optimizer.step()` runs, so gradients, skipped steps and parameters cannot say which rank
broke. The loss and the activations (the model output included) are computed by each rank on its own
batch: they are the rank's *local* evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..history import History

__all__ = ["RankFirst", "first_nonfinite", "loss_at"]


def _bad(v: float | None) -> bool:
    return v is not None and not math.isfinite(v)


@dataclass(frozen=True)
class RankFirst:
    """`local_step`: first step with a non-finite loss or activation (None: never); `local_what` says
    which; `any_step`: first step with any non-finite value or a skipped step (gradients included)."""

    rank: int
    local_step: int | None
    local_what: str
    any_step: int | None
    any_what: str


def _local(h: History) -> tuple[int | None, str]:
    found: list[tuple[int, str]] = []
    found += [(s.step, f"loss = {s.loss}") for s in h.steps if _bad(s.loss)][:1]
    acts = [r for r in h.layers if (r.activation_nonfinite or 0) > 0]
    if acts:
        first = min(r.step for r in acts)
        names = sorted({r.layer for r in acts if r.step == first})
        found.append((first, f"non-finite activations in {', '.join(names[:3])}"))
    found += [(e.step, f"non-finite {e.tensor}" + (f" in {e.layer}" if e.layer else ""))
              for e in h.events if e.kind == "nonfinite" and e.tensor in ("loss", "activation", "input")]
    # from Prometheus: slatmon_nonfinite_local_first_step (the loss or an activation, the exporter knew which)
    found += [(e.step, "non-finite loss or activations") for e in h.events if e.kind == "nonfinite"
              and e.tensor == "local"]
    found += [(e.step, f"first non-finite module {e.layer}") for e in h.events if e.kind == "localized"]
    return min(found) if found else (None, "")


def _any(h: History) -> tuple[int | None, str]:
    found: list[tuple[int, str]] = []
    found += [(s.step, "step skipped by the loss scaler") for s in h.steps if s.skipped][:1]
    found += [(s.step, "non-finite gradients") for s in h.steps if (s.grad_nonfinite or 0) > 0][:1]
    found += [(s.step, "non-finite parameters") for s in h.steps if (s.param_nonfinite or 0) > 0][:1]
    found += [(e.step, f"non-finite {e.tensor}") for e in h.events if e.kind == "nonfinite"]
    return min(found) if found else (None, "")


def first_nonfinite(h: History) -> RankFirst:
    """Where rank `h.run.rank` first went non-finite, locally and at all."""
    local_step, local_what = _local(h)
    any_step, any_what = _any(h)
    if local_step is not None and (any_step is None or local_step <= any_step):
        any_step, any_what = local_step, local_what
    return RankFirst(h.run.rank, local_step, local_what, any_step, any_what)


def loss_at(h: History, step: int) -> float | None:
    """The loss this rank observed at `step` (None: not observed)."""
    return next((s.loss for s in h.steps if s.step == step and s.loss is not None), None)
