"""A per-History index the rules share, built once per History and cached.

The live watcher re-runs every rule whenever its history changes (and Prometheus scrapes the
findings), so a rule must not rescan all layer rows per step. The index holds the sorted steps, the
rows grouped by step, each step's "latest earlier row per layer", and the first steps at which each
layer's parameters were non-finite. Read-only: callers must not mutate what it returns.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

from ..history import History, LayerObs, StepObs

__all__ = ["HistoryIndex", "index_of"]

_CACHE_SIZE = 8


def _count(x: object) -> int:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
    return int(x) if ok else 0  # type: ignore[arg-type]


@dataclass
class HistoryIndex:
    steps: list[StepObs] = field(default_factory=list)
    step_map: dict[int, StepObs] = field(default_factory=dict)
    by_step: dict[int, list[LayerObs]] = field(default_factory=dict)
    prev: dict[int, dict[str, LayerObs]] = field(default_factory=dict)  # step -> layer -> latest earlier row
    broken_after: dict[str, int] = field(default_factory=dict)  # layer -> first step with NaN params after it
    broken_before: dict[str, int] = field(default_factory=dict)  # layer -> first step with NaN params going in

    @classmethod
    def build(cls, history: History) -> HistoryIndex:
        idx = cls()
        for s in history.steps:
            if isinstance(s, StepObs) and isinstance(s.step, int) and not isinstance(s.step, bool):
                idx.step_map[s.step] = s
        idx.step_map = dict(sorted(idx.step_map.items()))
        idx.steps = list(idx.step_map.values())
        grouped: dict[int, list[LayerObs]] = {}
        for r in history.layers:
            if isinstance(r, LayerObs) and isinstance(r.step, int) and isinstance(r.layer, str):
                grouped.setdefault(r.step, []).append(r)
        idx.by_step = dict(sorted(grouped.items()))
        latest: dict[str, LayerObs] = {}
        for step, rows in idx.by_step.items():
            idx.prev[step] = dict(latest)
            for r in rows:
                latest[r.layer] = r
                if _count(r.param_nonfinite):
                    idx.broken_after.setdefault(r.layer, step)
                if _count(r.param_nonfinite_before):
                    idx.broken_before.setdefault(r.layer, step)
        return idx

    def prev_rows(self, step: int) -> dict[str, LayerObs]:
        """For each layer, its latest row strictly before `step` (only for steps that have rows)."""
        if step in self.prev:
            return self.prev[step]
        latest: dict[str, LayerObs] = {}
        for s, rows in self.by_step.items():
            if s >= step:
                break
            latest.update((r.layer, r) for r in rows)
        return latest

    def params_broken_before(self, module: str, step: int) -> bool:
        """Parameters of `module` (or of a module inside it; "" = any) were non-finite going into `step`:
        non-finite after an earlier update, or already before the update of a step <= `step`."""
        def mine(layer: str) -> bool:
            return module == "" or layer == module or layer.startswith(module + ".")

        return (any(s < step for layer, s in self.broken_after.items() if mine(layer))
                or any(s <= step for layer, s in self.broken_before.items() if mine(layer)))


_cache: list[tuple[tuple, weakref.ref, HistoryIndex]] = []


def index_of(history: History) -> HistoryIndex:
    """The (cached) index of `history`; rebuilt when its lists are replaced or change length."""
    key = (id(history), id(history.steps), len(history.steps), id(history.layers), len(history.layers))
    for k, ref, idx in _cache:
        if k == key and ref() is history:
            return idx
    idx = HistoryIndex.build(history)
    try:
        _cache.insert(0, (key, weakref.ref(history), idx))
    except TypeError:  # not weak-referenceable: don't cache
        return idx
    del _cache[_CACHE_SIZE:]
    return idx
