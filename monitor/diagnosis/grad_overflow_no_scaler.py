"""grad_overflow_no_scaler: non-finite float16 gradients in a run with no loss scaling.

Fires (critical) at the first step s with non-finite gradients when
- no loss scaling is in use (RunInfo.scaler "none"/"disabled" and no loss scale != 1 observed),
- float16 is involved (float16 parameters, or float16 autocast when RunInfo records it),
- parameters were finite going into s (otherwise NaN weights, not an overflow, made the gradients), and
- the evidence does not clear the forward pass: the loss at s was finite or not observed (the overflow
  happened in the backward pass), or activations at s (the watcher's "[output]" model-output row
  included) were non-finite, or a forward-origin localisation names a float16 module whose output
  abs-max is >= 65504 / non-finite, or only float16 layers have non-finite gradients while float32
  layers' gradients are finite (a NaN loss would reach every layer), or - the ambiguous case - the
  loss was non-finite and the activations were not checked at s (with float16 and no scaler the
  overflow is the likelier cause; the evidence says so, and nonfinite_loss is then a warning).
Only a non-finite loss with activations measured finite at s is left to nonfinite_loss; non-finite model
inputs at s (nonfinite_input) explain everything at s: no finding.
Layers: the overflowing module when localised, else the float16 layers with non-finite gradients.
Fixes: for a forward overflow a float32 island around the module (when localised) and bfloat16, never
loss scaling (it acts after the forward pass); for a backward overflow loss scaling, then bfloat16.
"""

from __future__ import annotations

from ..findings import Finding, Fix
from ..history import History
from . import fixes
from .inputs_seen import input_steps
from .numerics import FORMATS
from .observe import (
    activation_state,
    as_float,
    first_nonfinite_grads,
    fmt_layers,
    forward_origins,
    fp16_involved,
    has_loss_scaling,
    layer_dtype,
    loss_state,
    params_broken_before,
    rows_by_step,
    step_obs,
)

CODE = "grad_overflow_no_scaler"
FP16_MAX = FORMATS["float16"].max


def _overflowing_module(history: History, step: int) -> tuple[str, list[str]] | None:
    for e in forward_origins(history):
        out = as_float(e.detail.get("out_absmax"))
        dtype = str(e.detail.get("dtype", ""))
        if e.step >= step and "16" in dtype and "bf" not in dtype and (out is None or not out < FP16_MAX):
            return e.layer, [f"step {e.step}: {e.layer} ({dtype}) forward output abs-max {out} "
                             f"exceeds float16's {FP16_MAX:g} (input abs-max {e.detail.get('in_absmax')})"]
    return None


def _evidence(history: History, step: int, bad: list[str], loss: str, fp32_ok: list[str]) -> list[str]:
    lines = [f"step {step}: non-finite gradients in {len(bad) or 'some'} layer(s)"
             + (f": {fmt_layers(bad)}" if bad else ""),
             f"no loss scaling (scaler={history.run.scaler!r}); float16 overflows past {FP16_MAX:g}"]
    if loss == "finite":
        value = step_obs(history, step).loss
        lines.append(f"step {step}: loss finite ({value:g}): the overflow is in the backward pass")
    if fp32_ok:
        lines.append(f"float32 layers kept finite gradients: {fmt_layers(fp32_ok)}")
    return lines


def _fixes(history: History, module: str | None, forward: bool, ambiguous: bool) -> list[Fix]:
    """A forward overflow: a float32 island around the module, or bfloat16 - never loss scaling, which
    acts after the forward pass. A backward overflow: loss scaling that can go below 1 (skips and halves
    from 2**0, where the gradients overflowed), or bfloat16. Ambiguous: bfloat16 covers both."""
    setup = fixes.setup_of(history)
    if forward:
        return ([fixes.module_fp32_fix(module)] if module else []) + [fixes.bf16_fix(setup)]
    fp16_params = any(layer_dtype(history, x) == "float16" for x in history.run.layers)
    scaling = fixes.scaler_fix(setup, fp16_params, log_scale=0.0)
    if ambiguous:
        return [fixes.bf16_fix(setup), fixes.mitigation(scaling, "fixes a backward overflow only")]
    return [scaling, fixes.bf16_fix(setup)]


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    if has_loss_scaling(history) or not fp16_involved(history):
        return []
    first = first_nonfinite_grads(history)
    if first is None or params_broken_before(history, "", first[0]) or first[0] in input_steps(history):
        return []
    step, bad_rows = first
    loss = loss_state(step_obs(history, step), history)
    module = _overflowing_module(history, step)
    bad = [r.layer for r in bad_rows]
    low_bad = [x for x in bad if layer_dtype(history, x) == "float16"]
    fp32_ok = [r.layer for r in rows_by_step(history).get(step, [])
               if layer_dtype(history, r.layer) == "float32" and r.grad_nonfinite == 0]
    confined = bool(low_bad) and len(low_bad) == len(bad) and bool(fp32_ok)
    acts = activation_state(history, step)
    ambiguous = loss == "nonfinite" and module is None and not confined and acts != "nonfinite"
    if ambiguous and acts == "finite":
        return []  # measured finite activations: the loss itself (nonfinite_loss)
    lines = _evidence(history, step, bad, loss, fp32_ok if confined else [])
    if acts == "nonfinite":
        lines.append(f"step {step}: the model's activations were already non-finite with finite parameters: "
                     "the overflow happened in the forward pass")
    elif ambiguous:
        lines.append(f"step {step}: the loss was non-finite and the activations were not checked on this step; "
                     "with float16 and no loss scaling a forward overflow is the likely cause, a non-finite "
                     "loss term would look the same (see nonfinite_loss)")
    layers = low_bad or bad
    if module:
        layers = [module[0]]
        lines += module[1]
    fix_list = _fixes(history, module[0] if module else None, forward=bool(module) or acts == "nonfinite",
                      ambiguous=ambiguous)
    if not module and acts == "nonfinite":
        lines.append("to run only the overflowing module in float32, name it: monitor.localize(model, run_batch) "
                     "on a batch that overflows")
    if module or acts == "nonfinite":
        title = f"float16 overflow in the forward pass at step {step}; no loss scaler to skip the step"
    elif ambiguous:
        title = f"Non-finite gradients at step {step} in float16 without loss scaling (likely a float16 overflow)"
    else:
        title = f"float16 gradients overflowed in the backward pass at step {step}; no loss scaler to skip the step"
    return [Finding(CODE, "critical", title, lines, step, layers, fix_list)]
