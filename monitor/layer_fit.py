"""Fit a model's module paths under a cap: the deepest depth that fits, then sibling ranges one level deeper.

`fit(owners, max_layers)` maps every module that owns parameters to the layer it is measured and
exported under. A flat model of 5,000 `layers.N` modules truncated to the deepest depth that fits
is one layer named `layers`, which says nothing about where a problem is. Instead the level below
that depth is kept as far as the cap allows: each parent's children are split into contiguous runs
(`layers.[0-9]`, `layers.[10-19]`, ...), small parents first kept whole (water-filling), so a
grouped layer still narrows a failure down to a few neighbouring modules. Non-finite events name the
exact module anyway (monitor/sampler.py keeps per-tensor counts).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ALL", "fit", "range_name"]

ALL = "<model>"  # the one layer left when max_layers=1 cannot hold two top-level modules


def _cut(parts: tuple[str, ...], depth: int) -> tuple[str, ...]:
    return parts[:depth]


def _count(paths: Sequence[tuple[str, ...]], depth: int) -> int:
    return len({_cut(p, depth) for p in paths})


def range_name(parent: tuple[str, ...], first: str, last: str) -> str:
    """`layers.[0-9]`: the contiguous children `first` .. `last` (model order) of `parent`."""
    return ".".join((*parent, f"[{first}-{last}]"))


def _budgets(sizes: dict[tuple[str, ...], int], cap: int) -> dict[tuple[str, ...], int]:
    """Layers per parent (>= 1, <= its size, summing to <= cap): the smallest parents whole first."""
    out, left, todo = {}, cap, len(sizes)
    for parent, size in sorted(sizes.items(), key=lambda kv: kv[1]):
        out[parent] = min(size, max(1, left // todo))
        left -= out[parent]
        todo -= 1
    return out


def _split(parent: tuple[str, ...], children: list[tuple[str, ...]], budget: int) -> dict[tuple[str, ...], str]:
    """`children` (paths one level below `parent`, `parent` itself standing for its own parameters)
    into `budget` layers: `parent` alone, then contiguous runs of the others."""
    if budget <= 1:
        return {c: ".".join(parent) or ALL for c in children}
    out: dict[tuple[str, ...], str] = {}
    if parent in children:
        out[parent] = ".".join(parent)
        budget -= 1
    kids = [c for c in children if c != parent]
    size = -(-len(kids) // budget)  # equal runs from the first child (`[0-9]`, `[10-19]`): may use fewer layers
    for i in range(0, len(kids), size):
        run = kids[i:i + size]
        for c in run:
            out[c] = ".".join(c) if len(run) == 1 else range_name(parent, run[0][-1], run[-1][-1])
    return out


def fit(owners: Sequence[str], max_layers: int) -> dict[str, str]:
    """{module path: layer name} for the distinct module paths `owners` (model order), at most
    `max_layers` distinct layer names; the identity when they already fit."""
    paths = [tuple(o.split(".")) for o in owners]
    if len(set(paths)) <= max_layers:
        return {o: o for o in owners}
    depth = max(len(p) for p in paths) - 1
    while depth > 0 and _count(paths, depth) > max_layers:
        depth -= 1
    below: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for p in paths:  # each parent at `depth` -> its distinct paths one level deeper, in model order
        kids = below.setdefault(_cut(p, depth), [])
        if _cut(p, depth + 1) not in kids:
            kids.append(_cut(p, depth + 1))
    budgets = _budgets({parent: len(kids) for parent, kids in below.items()}, max_layers)
    names: dict[tuple[str, ...], str] = {}
    for parent, kids in below.items():
        names.update(_split(parent, kids, budgets[parent]))
    return {o: names[_cut(p, depth + 1)] for o, p in zip(owners, paths)}
