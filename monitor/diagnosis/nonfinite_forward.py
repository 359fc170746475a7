"""nonfinite_forward: a module's forward output is the first non-finite activation; names the module.

Source: "localized" events with direction "forward" that the watcher records on the step(s) after a
non-finite event, kept only where the module itself made the value (finite input, own parameters
finite going into that step, finite model input - see observe.forward_origins): the deepest module
call whose inputs were finite and output not, a parent included when its own code made the value
between finite children (the evidence says after which). Localisation runs on the iteration after the
event: first_step goes back over the directly preceding steps whose model output ("[output]" row) was
already non-finite with finite parameters and finite input (the evidence says so). Without events, the
first layer row (in module order, the model-output row "[output]" excluded) with
LayerObs.activation_nonfinite > 0 is used, but only at steps without forward events, with every
parameter finite going in and finite model inputs.
Severity: critical when no loss scaling is in use (the step writes NaN/Inf into the weights) or the
module produced non-finite outputs on >= REPEAT_STEPS (2) distinct steps; warning for a one-off under
a loss scaler (the step is skipped, training goes on).
"""

from __future__ import annotations

import dataclasses

from ..findings import Finding, Fix
from ..history import History
from . import fixes
from .inputs_seen import input_steps, saved_batch_lines
from .numerics import FORMATS, normalize_dtype
from .observe import (
    OUTPUT_ROWS,
    as_float,
    count,
    first_forward_origin,
    forward_origins,
    has_loss_scaling,
    layer_dtype,
    localized_events,
    origin_line,
    params_broken_before,
    root_output_nonfinite,
    rows_by_step,
)

CODE = "nonfinite_forward"
REPEAT_STEPS = 2


def _origin(history: History) -> tuple[str, int, str, list[int]] | None:
    """(module, first step, evidence line, every step it produced non-finite output)."""
    origin = first_forward_origin(history)
    if origin:
        first, steps = origin
        return first.layer, first.step, origin_line(first), steps
    localized_steps = {e.step for e in localized_events(history, "forward")}
    bad_data = input_steps(history)
    for step, rows in rows_by_step(history).items():
        if step in localized_steps or step in bad_data or params_broken_before(history, "", step):
            continue  # the ordered events are better; NaN weights or NaN data make every later output NaN
        for r in rows:
            if r.layer not in OUTPUT_ROWS and count(r.activation_nonfinite):
                steps = sorted({s for s, rs in rows_by_step(history).items()
                                for x in rs if x.layer == r.layer and count(x.activation_nonfinite)})
                line = (f"step {step}: {r.layer} output has {r.activation_nonfinite} non-finite elements "
                        "(first in module order; no localisation event recorded)")
                return r.layer, step, line, steps
    return None


def _earlier(history: History, step: int) -> int:
    """The first of the steps directly before `step` whose model output was already non-finite with finite
    parameters and finite model inputs (the localised overflow was under way before the hooks ran)."""
    bad_data = input_steps(history)
    first = step
    while (root_output_nonfinite(history, first - 1) and first - 1 not in bad_data
           and not params_broken_before(history, "", first - 1)):
        first -= 1
    return first


def _module_fix(module: str) -> Fix:
    if module not in OUTPUT_ROWS:
        return fixes.module_fp32_fix(module)
    fix = fixes.module_fp32_fix("")  # the root module: get_submodule("") is the model itself
    return dataclasses.replace(fix, summary="Run the model's own forward code in float32: its output exceeded "
                                            "float16's range (max 65504).")


def _fixes(history: History, module: str, dtype: str | None) -> list[Fix]:
    setup = fixes.setup_of(history)
    if dtype == "float32":  # it computed in float32 already: an island cannot help, a guarded op can
        return [fixes.loss_eps_fix("float32")]
    return [_module_fix(module), fixes.bf16_fix(setup)]


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    found = _origin(history)
    if found is None:
        return []
    module, localized, line, steps = found
    step = _earlier(history, localized)
    event = next((e for e in forward_origins(history) if e.layer == module), None)
    dtype = normalize_dtype(event.detail.get("dtype")) if event else layer_dtype(history, module)
    lines = [line]
    if step < localized:
        lines.append(f"step {step}: the model output was already non-finite (parameters and inputs finite); "
                     f"localisation ran from step {localized}")
    out = as_float(event.detail.get("out_absmax")) if event else None
    if dtype == "float16" and (out is None or not out < FORMATS["float16"].max):
        lines.append("float16 holds at most 65504: the output overflowed")
    if len(steps) > 1:
        lines.append(f"non-finite output on {len(steps)} steps: {', '.join(map(str, steps[:8]))}")
    scaled = has_loss_scaling(history)
    lines.append("a loss scaler is in use: affected steps are skipped" if scaled
                 else "no loss scaling: the non-finite values reach the gradients and the weights")
    severity = "critical" if not scaled or len(steps) >= REPEAT_STEPS or step < localized else "warning"
    lines += saved_batch_lines(history, CODE)
    where = "the model's own forward code" if module in OUTPUT_ROWS else module
    title = f"First non-finite activation: output of {where} at step {step}"
    return [Finding(CODE, severity, title, lines, step, [module], _fixes(history, module, dtype))]
