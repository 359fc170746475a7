"""Which module call made the first non-finite value: the deepest call whose inputs were finite and whose
outputs were not (forward), or whose output gradients were finite and input gradients not (backward).

Pure functions over host numbers (the Localizer's calls after its one transfer); no torch here.
A parent whose children were all finite while its own output is not is the culprit itself: the value
went non-finite in its own `forward` code, between its children. A call is never blamed for what it
received: a non-finite input (or, backward, a non-finite gradient arriving at its outputs, or forward
values that were already non-finite) makes it a consequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Call", "backward_culprit", "culprit_detail", "forward_culprit"]

MAX_NAMES = 6  # children named in an event's detail


@dataclass
class Call:
    """One module call seen by the Localizer. Abs-max values are NaN/inf when any element was; None: no
    such tensor (no floating input, no gradient received)."""

    name: str
    kind: str  # the module's class name
    parent: int | None  # index of the enclosing call
    dtype: str = ""
    in_absmax: float | None = None
    in_count: int = 0  # non-finite input elements
    out_absmax: float | None = None
    out_count: int = 0  # non-finite output elements
    grad_out_absmax: float | None = None  # of the gradients w.r.t. its outputs
    grad_in_absmax: float | None = None  # of the gradients w.r.t. its inputs
    grad_in_count: int = 0
    grad_in_seq: int | None = None  # when its first non-finite input gradient arrived (backward order)


def _finite(x: float | None) -> bool:
    return x is None or math.isfinite(x)


def _forward_candidate(c: Call) -> bool:
    return c.in_count == 0 and c.out_count > 0


def _backward_candidate(c: Call) -> bool:
    forward_finite = c.in_count == 0 and c.out_count == 0
    return (forward_finite and c.grad_out_absmax is not None and math.isfinite(c.grad_out_absmax)
            and (c.grad_in_count > 0 or not _finite(c.grad_in_absmax)))


def _deepest(calls: list[Call], candidates: list[int]) -> list[int]:
    """Candidates with no candidate inside them (a candidate's ancestors are explained by it)."""
    explained: set[int] = set()
    for i in candidates:
        p = calls[i].parent
        while p is not None and p not in explained:
            explained.add(p)
            p = calls[p].parent
    return [i for i in candidates if i not in explained]


def _pick(calls: list[Call], test: Callable[[Call], bool], order: Callable[[int], Any]) -> int | None:
    found = _deepest(calls, [i for i, c in enumerate(calls) if test(c)])
    return min(found, key=order) if found else None


def forward_culprit(calls: list[Call]) -> int | None:
    """Index of the deepest call with finite inputs and a non-finite output; the first in call order
    when several (disjoint) calls qualify."""
    return _pick(calls, _forward_candidate, lambda i: i)


def backward_culprit(calls: list[Call]) -> int | None:
    """Index of the deepest call with finite forward values and finite output gradients whose input
    gradients were non-finite; the first whose bad gradient arrived when several qualify (calls that
    share the culprit's input tensor receive the same, summed gradient and cannot be told apart)."""
    return _pick(calls, _backward_candidate,
                 lambda i: (calls[i].grad_in_seq if calls[i].grad_in_seq is not None else math.inf, i))


def _names(calls: list[Call], idx: list[int]) -> list[str]:
    return list(dict.fromkeys(calls[j].name for j in idx))[:MAX_NAMES]


def culprit_detail(calls: list[Call], i: int, direction: str) -> dict[str, Any]:
    """What an event says about the culprit call `i`: its class, parent, and, when it has children, that
    the value went non-finite in its own code: after which (finite) children, and (forward) which child
    received it first."""
    c = calls[i]
    children = [j for j, x in enumerate(calls) if x.parent == i]
    detail: dict[str, Any] = {"module_type": c.kind, "own_code": bool(children),
                              "parent": calls[c.parent].name if c.parent is not None else None}
    if not children:
        return detail
    if direction == "forward":
        fed = next((j for j in children if calls[j].in_count), None)
        before = [j for j in children if fed is None or j < fed]
        detail.update(after=_names(calls, before), fed_to=calls[fed].name if fed is not None else None)
    else:
        finite = [j for j in children if calls[j].grad_in_absmax is not None and _finite(calls[j].grad_in_absmax)
                  and not calls[j].grad_in_count]
        detail.update(after=_names(calls, finite[::-1]), fed_to=None)
    return detail
