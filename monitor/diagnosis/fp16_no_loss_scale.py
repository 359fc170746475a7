"""fp16_no_loss_scale (pre-flight, warning): float16 parameters are trained with no loss scaling.

Fires when RunInfo lists trainable float16 layers, RunInfo.scaler is "none" or "disabled", and no loss
scale other than 1 was observed. first_step 0 (predictable before the first step): gradients below
float16's smallest subnormal (5.96e-8) will round to 0 (grad_underflow) and those above 65504 to inf
(grad_overflow_no_scaler), with nothing to skip the step. Layers: the trainable float16 layers.
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import fixes
from .observe import fmt_layers, has_loss_scaling, layer_dtype

CODE = "fp16_no_loss_scale"


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    if has_loss_scaling(history):
        return []
    layers = [name for name, info in history.run.layers.items()
              if layer_dtype(history, name) == "float16" and getattr(info, "trainable", True) is not False]
    if not layers:
        return []
    how = "GradScaler(enabled=False)" if history.run.scaler == "disabled" else "no GradScaler or loss_scale"
    lines = [f"{len(layers)} trainable float16 layer(s): {fmt_layers(layers, 3)}",
             f"loss scaling: {how}",
             "float16 gradients round to 0 below 5.96e-08 and to inf above 65504; "
             "nothing skips a step whose gradients overflowed"]
    setup = fixes.setup_of(history)
    return [Finding(CODE, "warning", "float16 parameters trained without loss scaling", lines, 0, layers,
                    # float16 weights: scaling by hand with master copies (TRELLIS), or bfloat16; autocast with a
                    # GradScaler on float32 weights kept 50% of an underflowing run's gradients at 0 in the
                    # fault tests (tiny weights still round to 0 in its float16 casts)
                    [fixes.manual_loss_scale_fix(setup), fixes.bf16_fix(setup)])]
