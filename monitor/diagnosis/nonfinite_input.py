"""nonfinite_input: the data itself held NaN/Inf - a tensor passed to the model was non-finite before any
module ran.

Source: "nonfinite" events for tensor "input" that the watcher records from its device-side check of the
entry modules' floating inputs (every iteration, read with the next sampled step's transfer, so the step
is exact even when it was not sampled) and that `monitor.localize` returns for a replayed batch. Each
names the input as passed (`args[0]`, `kwargs['cond']`, `args[0].feats`), its dtype, shape and count.
On unsampled steps the watcher only flags a tensor (its count is None). From Prometheus only the first
step is known: it still keeps the other rules from blaming a module there, and the watcher's own
finding (slatmon_finding) stands for this one.
Severity: critical, except warning when every affected step was skipped (a loss scaler or the loop kept the
values out of the weights) and there were fewer than REPEAT_STEPS (3) of them. first_step: the first step
with a non-finite input. Whatever went non-finite at that
step (activations, loss, gradients) came in with the data: nonfinite_forward, grad_overflow_no_scaler
and nonfinite_loss do not blame a module or the loss there. With watch(save_bad_batch=True) the evidence
gives the saved batch and a one-line replay.
"""

from __future__ import annotations

from ..findings import Finding, Fix
from ..history import Event, History
from .inputs_seen import input_events, saved_batch_lines
from .observe import count, fmt_layers, step_obs

CODE = "nonfinite_input"
SHOWN = 4  # inputs listed for the first step
REPEAT_STEPS = 3

DATA_FIX = Fix("data", "Check every batch with torch.isfinite before the forward pass and skip a bad one. Log it, "
               "then repair the loader or the sample that produced it.", '''\
def batch_is_finite(*tensors):
    """False when a floating-point tensor of the batch holds NaN or Inf."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if torch.is_tensor(t) and t.is_floating_point())

# in the training loop, before model(...):
#     if not batch_is_finite(x, cond):   # every tensor you pass to the model
#         print("skipping a non-finite batch")   # log the sample ids / file names here
#         continue''')


def _where(e: Event) -> str:
    module = e.layer if isinstance(e.layer, str) and e.layer else None
    name = e.detail.get("input")
    return (str(name) if name else "a tensor (which one: see the run record)") + (f" of {module}" if module else "")


def _line(e: Event) -> str:
    d = e.detail
    shape = "x".join(str(n) for n in d["shape"]) if isinstance(d.get("shape"), list) else "?"
    n = d.get("nonfinite")
    counted = f"{n} of {d.get('numel', '?')} elements NaN/Inf" if n is not None else (
        "NaN/Inf (flagged on an unsampled step; counted on sampled ones)")
    return f"step {e.step}: model input {_where(e)} ({d.get('dtype', '?')}, shape {shape or 'scalar'}): {counted}"


def _outcome(history: History, step: int) -> str | None:
    obs = step_obs(history, step)
    if obs is None:
        return None
    if obs.skipped:
        return f"step {step} was skipped ({obs.skip_reason or 'scaler'}): the weights did not take the values"
    if count(obs.param_nonfinite):
        return f"step {step} was applied: the update wrote non-finite values into the weights"
    return None


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    # not from Prometheus: it knows just the first step (slatmon_nonfinite_input_first_step), and the watcher's
    # own finding (slatmon_finding) it exports is the better account there
    events = [e for e in input_events(history) if "input" in e.detail and count(e.detail.get("nonfinite")) != 0]
    if not events:
        return []
    first = events[0]
    step = first.step
    lines = [_line(e) for e in events if e.step == step][:SHOWN]
    steps = sorted({e.step for e in events})
    if len(steps) > 1:
        lines.append(f"non-finite inputs on {len(steps)} steps: {', '.join(map(str, steps[:8]))}")
    lines.append("the data was non-finite before any module ran: the activations, loss and gradients of that "
                 "step follow from it, no module made them")
    outcome = _outcome(history, step)
    if outcome:
        lines.append(outcome)
    lines += saved_batch_lines(history, CODE)
    skipped = all((obs := step_obs(history, s)) is not None and obs.skipped for s in steps)
    severity = "warning" if skipped and len(steps) < REPEAT_STEPS else "critical"
    modules = list(dict.fromkeys(e.layer for e in events if isinstance(e.layer, str) and e.layer))
    title = f"Non-finite model input at step {step}: {_where(first)}"
    if modules:
        lines.append(f"entry modules that received it: {fmt_layers(modules)}")
    return [Finding(CODE, severity, title, lines, step, modules, [DATA_FIX])]
