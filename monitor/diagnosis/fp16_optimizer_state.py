"""fp16_optimizer_state (pre-flight, warning): an Adam-family optimizer keeps float16 state.

For every trainable layer whose Adam state is float16 (LayerInfo.state_dtype, or the parameter dtype
when the optimizer updates the layer's own tensors) and that adam_eps_underflow does not already flag
(its eps survives in float16): exp_avg_sq rounds to 0 for |grad| below ~5.5e-3 on the first step and
~1.7e-4 later, so those elements step by lr * exp_avg / eps instead of Adam's normalised step; with
fused=True the update is computed in fp32 but the stored state still underflows between steps.
When the history has exp_avg_sq zero shares (state_zero_ratio) for those layers, the largest latest
share is quoted. first_step 0.
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import fixes
from .adam_eps_underflow import exposed_layers
from .numerics import adam_state_underflow_grad
from .observe import adam_family, fmt_layers, is_num, rows_by_step, state_dtype

CODE = "fp16_optimizer_state"


def _zero_share(history: History, layers: list[str]) -> tuple[int, str, float] | None:
    latest = None
    for step, rows in rows_by_step(history).items():
        shares = [(r.layer, r.state_zero_ratio) for r in rows if r.layer in layers and is_num(r.state_zero_ratio)]
        if shares:
            layer, share = max(shares, key=lambda x: x[1])
            latest = (step, layer, float(share))
    return latest


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    if not adam_family(history.run.optimizer):
        return []
    flagged = exposed_layers(history)
    layers = [name for name in history.run.layers
              if state_dtype(history, name) == "float16" and name not in flagged]
    if not layers:
        return []
    lines = [f"{history.run.optimizer} state in float16 for {len(layers)} layer(s): {fmt_layers(layers)}",
             f"exp_avg_sq rounds to 0 for |grad| < {adam_state_underflow_grad('float16'):.2g} on the first step "
             f"and < {adam_state_underflow_grad('float16', first_step=False):.2g} later; those elements then "
             "step by lr * exp_avg / eps"]
    share = _zero_share(history, layers)
    if share:
        lines.append(f"step {share[0]}: exp_avg_sq == 0 in {share[2]:.0%} of {share[1]}'s elements")
    setup = fixes.setup_of(history)
    return [Finding(CODE, "warning", f"{history.run.optimizer} keeps its state in float16", lines, 0, layers,
                    [fixes.master_weights_fix(setup)])]
