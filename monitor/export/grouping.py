"""Per-layer series grouped by block for large jobs: the worst layers in full, the rest one series per block.

Per-layer series cost layers x ranks x metrics in Prometheus; for a 64-rank run of a 24-block model
that is several hundred thousand series. With grouping, every layer under a numbered block
(`encoder.blocks.3.attn.to_qkv`) is folded into that block's group (`layer="encoder.blocks.3.*"`),
except the `WORST` layers of the step (non-finite first, then the largest gradient norm), which stay
in full so the alert and the triage page still name the culprit. The run record keeps every layer.

Aggregates are exact where the quantity allows: norms as sqrt(sum of squares), element counts summed,
ratios weighted by element count; the update ratio uses the group's parameter norm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..history import LayerInfo, LayerObs

__all__ = ["GROUP_RANKS_ABOVE", "MODES", "WORST", "Grouped", "group_name", "group_rows", "should_group"]

MODES = ("auto", "full", "grouped")
GROUP_RANKS_ABOVE = 8  # "auto": group when the job has more ranks than this
WORST = 8  # layers kept in full on every scrape
_BLOCK = re.compile(r"^(.*?\.\d+)(\..+)$")


def should_group(mode: str, world_size: int) -> bool:
    return mode == "grouped" or (mode == "auto" and world_size > GROUP_RANKS_ABOVE)


def group_name(layer: str) -> str:
    """`encoder.blocks.3.attn.to_qkv` -> `encoder.blocks.3.*`; a layer outside numbered blocks keeps its name."""
    m = _BLOCK.match(layer)
    return f"{m.group(1)}.*" if m else layer


@dataclass(frozen=True)
class Grouped:
    rows: tuple[LayerObs, ...]
    folded: int  # layers exported inside a group rather than under their own name
    groups: dict[str, str]  # layer -> exported name


def _worst(rows: Iterable[LayerObs]) -> set[str]:
    def key(r: LayerObs) -> tuple[int, float]:
        bad = (r.grad_nonfinite or 0) + (r.param_nonfinite or 0) + (r.activation_nonfinite or 0)
        norm = r.grad_norm if r.grad_norm is not None and math.isfinite(r.grad_norm) else -1.0
        return (bad, norm)

    return {r.layer for r in sorted(rows, key=key, reverse=True)[:WORST]}


def _sqrt_sum_sq(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return math.sqrt(sum(v * v for v in vals)) if vals else None


def _count(values: list[int | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def _weighted(rows: list[LayerObs], attr: str, info: dict[str, LayerInfo]) -> float | None:
    pairs = [(getattr(r, attr), max(info[r.layer].numel if r.layer in info else 1, 1)) for r in rows]
    pairs = [(v, n) for v, n in pairs if v is not None]
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs) if pairs else None


def _rms(rows: list[LayerObs], info: dict[str, LayerInfo]) -> float | None:
    """RMS over the group's elements from per-layer RMS values (numel-weighted mean of squares)."""
    squares = [LayerObs(step=r.step, layer=r.layer, adam_rms_ratio=r.adam_rms_ratio**2)
               for r in rows if r.adam_rms_ratio is not None]
    mean = _weighted(squares, "adam_rms_ratio", info)
    return None if mean is None else math.sqrt(mean)


def _update_ratio(rows: list[LayerObs]) -> float | None:
    pairs = [(r.update_ratio, r.param_norm) for r in rows if r.update_ratio is not None and r.param_norm]
    if not pairs:
        return None
    den = math.sqrt(sum(p * p for _, p in pairs))
    return math.sqrt(sum((u * p) ** 2 for u, p in pairs)) / den if den else None


def _merge(name: str, rows: list[LayerObs], info: dict[str, LayerInfo]) -> LayerObs:
    return LayerObs(
        step=rows[0].step, layer=name,
        grad_norm=_sqrt_sum_sq([r.grad_norm for r in rows]),
        param_norm=_sqrt_sum_sq([r.param_norm for r in rows]),
        update_ratio=_update_ratio(rows),
        grad_nonfinite=_count([r.grad_nonfinite for r in rows]),
        param_nonfinite=_count([r.param_nonfinite for r in rows]),
        param_nonfinite_before=_count([r.param_nonfinite_before for r in rows]),
        zero_grad_ratio=_weighted(rows, "zero_grad_ratio", info),
        state_zero_ratio=_weighted(rows, "state_zero_ratio", info),
        update_unchanged_ratio=_weighted(rows, "update_unchanged_ratio", info),
        adam_rms_ratio=_rms(rows, info),
        activation_nonfinite=_count([r.activation_nonfinite for r in rows]))


def group_rows(rows: Iterable[LayerObs], info: dict[str, LayerInfo]) -> Grouped:
    """Fold `rows` (one step's layers) into block groups, keeping the worst layers in full."""
    rows = list(rows)
    keep = _worst(rows)
    names = {r.layer: r.layer if r.layer in keep else group_name(r.layer) for r in rows}
    members: dict[str, list[LayerObs]] = {}
    for r in rows:
        members.setdefault(names[r.layer], []).append(r)
    out = tuple(m[0] if len(m) == 1 and m[0].layer == n else _merge(n, m, info) for n, m in members.items())
    return Grouped(out, sum(1 for layer, n in names.items() if n != layer), names)
