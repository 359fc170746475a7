"""nonfinite_after_update: gradients finite, parameters non-finite right after `optimizer.step()`.

Per layer, at a step that was not skipped: non-finite parameter elements after the update > 0, none
before it (LayerObs.param_nonfinite_before, or the layer's previous sample; unknown counts as finite)
and a measured-finite gradient (the layer's own count is 0, or it had none and the step's total is 0).
Any occurrence is critical. first_step is the first such step; layers are those that broke then.
Without per-layer rows the same test runs on the step totals (StepObs), with no layers named.
The cause is the optimizer's arithmetic (eps, dtype, lr), so fixes point there.
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import fixes
from .evidence import LayerLine, aggregate
from .numerics import is_low_precision
from .observe import (
    adam_family,
    broke_in_update,
    count,
    layer_dtype,
    prev_layer_rows,
    rows_by_step,
    sorted_steps,
)

CODE = "nonfinite_after_update"


def _from_rows(history: History) -> tuple[int, list[str], list[str], tuple[str, ...]] | None:
    by_step = rows_by_step(history)
    steps = {s.step: s for s in sorted_steps(history)}
    for step, rows in by_step.items():
        prev = prev_layer_rows(history, step)
        hit = [r for r in rows if broke_in_update(r, prev.get(r.layer), steps.get(step))]
        if hit:
            items = [LayerLine(r.layer, float(r.param_nonfinite), (
                f"step {step}: {r.layer} ({layer_dtype(history, r.layer) or 'dtype unknown'}): gradient finite, "
                f"{r.param_nonfinite} non-finite parameter elements after the update")) for r in hit]
            summary, details = aggregate(f"step {step}: gradients finite, non-finite parameter elements after the "
                                         "update", items, lambda v: f"{v:.0f}")
            return step, [r.layer for r in hit], [summary], details
    return None


def _from_steps(history: History) -> tuple[int, list[str], list[str], tuple[str, ...]] | None:
    previous = None
    for s in sorted_steps(history):
        after, grads = count(s.param_nonfinite), count(s.grad_nonfinite)
        if after and grads == 0 and not s.skipped and not (previous and count(previous.param_nonfinite)):
            return s.step, [], [f"step {s.step}: gradients finite, {after} non-finite parameter elements "
                                "after the update (all layers)"], ()
        previous = s
    return None


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    found = _from_rows(history) if history.layers else _from_steps(history)
    if not found:
        return []
    step, layers, lines, details = found
    setup = fixes.setup_of(history)
    low = [x for x in layers if is_low_precision(layer_dtype(history, x))]
    fix_list = []
    if low or not layers:
        fix_list.append(fixes.master_weights_fix(setup))
    if adam_family(history.run.optimizer):
        fix_list.append(fixes.eps_fix(setup))  # Adam's step is ~lr whatever the lr: a lower lr cannot help
    else:
        fix_list.append(fixes.mitigation(fixes.lr_fix(setup, float(f"{setup.lr / 10:.0e}")),
                                         "a smaller update may stay within the weights' dtype"))
    title = f"Parameters became non-finite in optimizer.step() at step {step} although gradients were finite"
    if layers:
        title += f" ({len(layers)} layer{'s' if len(layers) != 1 else ''})"
    return [Finding(CODE, "critical", title, lines, step, layers, fix_list, details)]
