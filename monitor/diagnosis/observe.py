"""Small, defensive readers over a History that several rules share.

Histories come from live watchers, run records and Prometheus, possibly truncated or sparse (a
scrape every few steps), so every helper treats missing values (None), odd types and NaN as
"unknown" instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..history import Event, GroupInfo, History, LayerInfo, LayerObs, StepObs
from .index import index_of
from .inputs_seen import input_steps
from .numerics import normalize_dtype

__all__ = [
    "NO_SCALER",
    "activation_state",
    "adam_family",
    "as_float",
    "count",
    "broke_in_update",
    "first_nonfinite_grads",
    "first_forward_origin",
    "origin_line",
    "fmt_layers",
    "forward_origins",
    "fp16_involved",
    "grads_finite",
    "groups",
    "has_loss_scaling",
    "is_num",
    "layer_groups",
    "layer_dtype",
    "layer_info",
    "localized_events",
    "loss_state",
    "median",
    "nonfinite",
    "params_broken_before",
    "prev_layer_rows",
    "OUTPUT_ROWS",
    "root_output_nonfinite",
    "rows_by_step",
    "sorted_steps",
    "step_obs",
    "state_dtype",
]

NO_SCALER = ("none", "disabled", "", None)


def is_num(x: Any) -> bool:
    """A real, finite number (bools excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def nonfinite(x: Any) -> bool:
    """A number that is NaN or +-inf."""
    return isinstance(x, float) and not math.isfinite(x)


def count(x: Any) -> int | None:
    """A non-negative element count, or None when unknown."""
    return int(x) if is_num(x) and x >= 0 else None


def median(values: Iterable[float]) -> float | None:
    vals = sorted(v for v in values if is_num(v))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def sorted_steps(history: History) -> list[StepObs]:
    """Step observations with an integer step, ascending (the last one wins on duplicates). Cached:
    do not mutate."""
    return index_of(history).steps


def rows_by_step(history: History) -> dict[int, list[LayerObs]]:
    """Per-layer rows grouped by step, steps ascending, rows in their recorded (module) order. Cached:
    do not mutate."""
    return index_of(history).by_step


def prev_layer_rows(history: History, step: int) -> dict[str, LayerObs]:
    """For each layer, its latest row strictly before `step`."""
    return index_of(history).prev_rows(step)


def layer_info(history: History, layer: str) -> LayerInfo | None:
    info = history.run.layers.get(layer) if isinstance(history.run.layers, dict) else None
    return info if isinstance(info, LayerInfo) else None


def layer_dtype(history: History, layer: str) -> str | None:
    info = layer_info(history, layer)
    return normalize_dtype(info.dtype) if info else None


def adam_family(optimizer: Any) -> bool:
    """Adam, AdamW, NAdam, RAdam, Adamax, SparseAdam, FusedAdam, Adam8bit ... (by class name)."""
    return isinstance(optimizer, str) and "adam" in optimizer.lower()


def has_loss_scaling(history: History) -> bool:
    """A GradScaler or a custom loss scale is in use (per RunInfo, or observed scales other than 1)."""
    if history.run.scaler not in NO_SCALER:
        return True
    return any(is_num(s.loss_scale) and s.loss_scale != 1.0 for s in history.steps if isinstance(s, StepObs))


def groups(history: History) -> list[GroupInfo]:
    return [g for g in history.run.groups if isinstance(g, GroupInfo)]


def layer_groups(history: History, layer: str) -> list[GroupInfo]:
    """The param group(s) that may hold `layer`: its own when LayerInfo has a valid `group` index
    (optional field), else every group."""
    all_groups = groups(history)
    info = layer_info(history, layer)
    index = getattr(info, "group", None)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(all_groups):
        return [all_groups[index]]
    return all_groups


def state_dtype(history: History, layer: str) -> str | None:
    """Dtype of the Adam state of `layer`'s tensors: LayerInfo.state_dtype, else (no state yet) the
    parameter dtype when the optimizer updates the layer's own tensors (PyTorch's zeros_like)."""
    info = layer_info(history, layer)
    if info is None or not info.trainable:
        return None
    return normalize_dtype(info.state_dtype) or (normalize_dtype(info.dtype) if info.in_optimizer else None)


def localized_events(history: History, direction: str | None = None) -> list[Event]:
    """"localized" events (optionally of one direction), by step."""
    out = [
        e for e in history.events
        if isinstance(e, Event) and e.kind == "localized" and isinstance(e.step, int)
        and isinstance(e.layer, str) and isinstance(e.detail, dict)
        and (direction is None or e.detail.get("direction") == direction)
    ]
    return sorted(out, key=lambda e: e.step)


def fmt_layers(layers: list[str], limit: int = 6) -> str:
    """'a, b, c (+4 more)'."""
    shown = ", ".join(layers[:limit])
    return shown + (f" (+{len(layers) - limit} more)" if len(layers) > limit else "")


def grads_finite(row: LayerObs, step: StepObs | None) -> bool:
    """The layer's gradients were measured finite (its own count is 0, or it has none and the step's
    total is 0) and so was what optimizer.step() received (clipping by a NaN norm spreads a NaN
    into every layer after the per-layer numbers were taken)."""
    if step is not None and nonfinite(step.grad_norm_applied):
        return False
    own = count(row.grad_nonfinite)
    if own is not None:
        return own == 0
    return step is not None and count(step.grad_nonfinite) == 0


def broke_in_update(row: LayerObs, prev: LayerObs | None, step: StepObs | None) -> bool:
    """The layer's parameters were finite before `optimizer.step()` and non-finite after it, from finite
    gradients. Unknown "before" counts as finite (first sample); a skipped step never qualifies."""
    if step is not None and step.skipped:
        return False
    after = count(row.param_nonfinite)
    before = count(row.param_nonfinite_before)
    earlier = count(prev.param_nonfinite) if prev is not None else None
    return bool(after) and not before and not earlier and grads_finite(row, step)


def as_float(x: Any) -> float | None:
    """A float from a number or a numeric string ('inf', 'nan' included); None otherwise."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def params_broken_before(history: History, module: str, step: int) -> bool:
    """Some parameters of `module` (or of a module inside it; "" = any) were non-finite going into
    `step`."""
    return index_of(history).params_broken_before(module, step)


def forward_origins(history: History) -> list[Event]:
    """Forward "localized" events where the module itself made the first non-finite value: finite input
    (or not recorded), its own parameters finite going into that step, and the model's input finite at
    that step. A module that merely forwards NaN parameters written by an earlier update, or NaN data,
    is a consequence, not an origin."""
    out = []
    bad_data = input_steps(history)
    for e in localized_events(history, "forward"):
        if e.step in bad_data:
            continue
        absmax = as_float(e.detail.get("in_absmax"))
        if absmax is not None and not math.isfinite(absmax):
            continue
        if params_broken_before(history, e.layer, e.step):
            continue
        out.append(e)
    return out


def fp16_involved(history: History) -> bool:
    """float16 parameters, or a forward under float16 autocast (optional RunInfo.autocast)."""
    if normalize_dtype(getattr(history.run, "autocast", None)) == "float16":
        return True
    return any(normalize_dtype(getattr(i, "dtype", None)) == "float16" for i in history.run.layers.values())


def loss_state(step: StepObs | None, history: History | None = None) -> str:
    """'finite', 'nonfinite' or 'unknown' for the loss observed at `step`; with `history`, a "nonfinite"
    event for tensor "loss" at that step counts too (run records store a NaN loss as NULL)."""
    if step is None:
        return "unknown"
    if is_num(step.loss):
        return "finite"
    if nonfinite(step.loss):
        return "nonfinite"
    if history is not None and any(isinstance(e, Event) and e.kind == "nonfinite" and e.tensor == "loss"
                                   and e.step == step.step for e in history.events):
        return "nonfinite"
    return "unknown"


def first_nonfinite_grads(history: History) -> tuple[int, list[LayerObs]] | None:
    """(first step with non-finite gradients, its layer rows with non-finite gradients): from the step
    totals, the per-layer rows, or a "nonfinite" event for tensor "grad", whichever is earliest."""
    candidates = [s.step for s in sorted_steps(history) if count(s.grad_nonfinite)]
    by_step = rows_by_step(history)
    candidates += [step for step, rows in by_step.items() if any(count(r.grad_nonfinite) for r in rows)]
    candidates += [e.step for e in history.events if isinstance(e, Event) and e.kind == "nonfinite"
                   and e.tensor == "grad" and isinstance(e.step, int)]
    if not candidates:
        return None
    step = min(candidates)
    return step, [r for r in by_step.get(step, []) if count(r.grad_nonfinite)]


def step_obs(history: History, step: int) -> StepObs | None:
    return index_of(history).step_map.get(step)


OUTPUT_ROWS = ("[output]",)  # the pseudo-layer holding the model output's non-finite count


def root_output_nonfinite(history: History, step: int) -> bool | None:
    """Whether the model's forward output at `step` had non-finite elements (the watcher's "[output]"
    row); None when not measured."""
    counts = [count(r.activation_nonfinite) for r in rows_by_step(history).get(step, [])
              if r.layer in OUTPUT_ROWS]
    known = [c for c in counts if c is not None]
    return bool(max(known)) if known else None


def activation_state(history: History, step: int) -> str:
    """'nonfinite' when any activation row at `step` (the model output "[output]" included) counted
    non-finite elements, 'finite' when some were measured and all were 0, else 'unknown'."""
    measured = [count(r.activation_nonfinite) for r in rows_by_step(history).get(step, [])]
    known = [c for c in measured if c is not None]
    if not known:
        return "unknown"
    return "nonfinite" if any(known) else "finite"


def first_forward_origin(history: History) -> tuple[Event, list[int]] | None:
    """The first module whose forward output went non-finite by itself (see forward_origins), and
    every step on which that module did so."""
    events = forward_origins(history)
    if not events:
        return None
    first = events[0]
    return first, sorted({e.step for e in events if e.layer == first.layer})


def origin_line(event: Event) -> str:
    """Evidence line for a forward-origin localisation event; where the module has children, that the value
    went non-finite in its own forward code, after which of them."""
    d = event.detail
    line = (f"step {event.step}: first non-finite forward output in {event.layer} ({d.get('dtype', '?')}, "
            f"input abs-max {d.get('in_absmax', '?')}, output abs-max {d.get('out_absmax', '?')})")
    if d.get("own_code") is True:
        after = d.get("after") if isinstance(d.get("after"), list) else []
        kind = d.get("module_type") if isinstance(d.get("module_type"), str) else "its"
        line += (f": in {kind}.forward's own code, between its children"
                 + (f", after {fmt_layers([str(x) for x in after])} (finite)" if after else "")
                 + (f", before {d['fed_to']}" if isinstance(d.get("fed_to"), str) else ""))
    return line
