"""nonfinite_loss: the loss is non-finite while the activations are finite (log(0), x/0, exp overflow
in the loss itself).

At the first step s whose loss is non-finite (StepObs.loss, or a "nonfinite" event for tensor "loss"),
with parameters finite going into s. Not reported when activations at s were non-finite (including the
watcher's "[output]" model-output row), when a forward-origin localisation names a module at steps
s..s+LOOKAHEAD (3) (nonfinite_forward explains it), nor when only float16 layers got non-finite
gradients at s while float32 layers stayed finite (an overflow, see grad_overflow_no_scaler), nor when
the model's inputs at s were non-finite (nonfinite_input).
Activations count as checked-finite where a step with a non-finite loss has per-layer
activation_nonfinite measurements that are all 0; otherwise the evidence says they were not checked.
Severity: critical, except warning when a loss scaler skipped every affected step and there were
fewer than REPEAT_STEPS (3) of them, or when the activations were not checked in a float16 run without
loss scaling (a forward overflow is the likelier cause there; grad_overflow_no_scaler says so).
"""

from __future__ import annotations

from ..findings import Finding
from ..history import Event, History
from . import fixes
from .inputs_seen import input_steps
from .observe import (
    activation_state,
    count,
    forward_origins,
    fp16_involved,
    has_loss_scaling,
    layer_dtype,
    nonfinite,
    params_broken_before,
    rows_by_step,
    sorted_steps,
)

CODE = "nonfinite_loss"
LOOKAHEAD = 3
REPEAT_STEPS = 3


def _bad_steps(history: History) -> list[int]:
    steps = {s.step for s in sorted_steps(history) if nonfinite(s.loss)}
    steps |= {e.step for e in history.events if isinstance(e, Event) and e.kind == "nonfinite"
              and e.tensor == "loss" and isinstance(e.step, int)}
    return sorted(steps)


def _overflow_pattern(history: History, step: int) -> bool:
    rows = rows_by_step(history).get(step, [])
    bad = [r for r in rows if count(r.grad_nonfinite)]
    fp16_bad = [r for r in bad if layer_dtype(history, r.layer) == "float16"]
    fp32_ok = [r for r in rows if layer_dtype(history, r.layer) == "float32" and r.grad_nonfinite == 0]
    return bool(bad) and len(fp16_bad) == len(bad) and bool(fp32_ok)


def _activations_checked(history: History, bad_steps: list[int]) -> int | None:
    """A step with a non-finite loss whose measured activations were all finite."""
    by_step = rows_by_step(history)
    for step in bad_steps:
        measured = [r for r in by_step.get(step, []) if count(r.activation_nonfinite) is not None]
        if measured and not any(count(r.activation_nonfinite) for r in measured):
            return step
    return None


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    bad_steps = _bad_steps(history)
    if not bad_steps:
        return []
    step = bad_steps[0]
    if params_broken_before(history, "", step) or _overflow_pattern(history, step) or step in input_steps(history):
        return []
    if activation_state(history, step) == "nonfinite":
        return []
    if any(step <= e.step <= step + LOOKAHEAD for e in forward_origins(history)):
        return []
    by_step = {s.step: s for s in sorted_steps(history)}
    loss = by_step[step].loss if step in by_step else None
    lines = [f"step {step}: loss = {loss}" if loss is not None else f"step {step}: non-finite loss event",
             f"parameters were finite going into step {step}"]
    checked = _activations_checked(history, bad_steps)
    if checked is not None:
        lines.append(f"step {checked}: the measured activations (model output included) were finite "
                     "while the loss was not")
    else:
        lines.append("activations were not checked at these steps (localisation did not run)")
    if len(bad_steps) > 1:
        lines.append(f"non-finite loss on {len(bad_steps)} steps: {', '.join(map(str, bad_steps[:8]))}")
    all_skipped = all(by_step.get(s) is not None and by_step[s].skipped for s in bad_steps)
    mild = has_loss_scaling(history) and all_skipped and len(bad_steps) < REPEAT_STEPS
    if mild:
        lines.append("the loss scaler skipped the affected step(s)")
    # unchecked activations, float16 and no scaler: a forward overflow (grad_overflow_no_scaler) is likelier
    rival = checked is None and fp16_involved(history) and not has_loss_scaling(history)
    if rival:
        lines.append("float16 without loss scaling: a forward overflow looks the same; see grad_overflow_no_scaler")
    title = (f"Non-finite loss at step {step}: activations finite, so the loss computation itself"
             if checked is not None else f"Non-finite loss at step {step} with finite parameters")
    severity = "warning" if mild or rival else "critical"
    return [Finding(CODE, severity, title, lines, step, (), [fixes.loss_eps_fix()])]
