"""grad_underflow: a large share of exactly-zero float16 gradients where loss scaling would keep them.

Per sampled step where scaling would help (no loss scaling in use, or an observed loss scale <= 1):
the share of exactly-zero gradient elements over the float16 layers (zero_grad_ratio weighted by
LayerInfo.numel, 1 when unknown), minus the same share over float32 layers when those are measured
(structural zeros - ReLU, masks, unused rows - show up in both and are not underflow).
Reported at the start of the first run of >= SUSTAIN (3) consecutive such steps with an excess share
>= CRITICAL_SHARE (0.9) -> critical, else >= WARN_SHARE (0.5) -> warning. A share exactly at a
threshold counts; 2 steps in a row are not enough.
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import fixes
from .observe import has_loss_scaling, is_num, layer_dtype, layer_info, rows_by_step, step_obs
from .sustained import sustained_severity

CODE = "grad_underflow"
WARN_SHARE = 0.5
CRITICAL_SHARE = 0.9
SUSTAIN = 3


def _weights(history: History) -> dict[str, tuple[str | None, float]]:
    """layer -> (dtype, numel weight; 1 when unknown)."""
    out = {}
    for layer in history.run.layers:
        info = layer_info(history, layer)
        w = float(info.numel) if info and is_num(info.numel) and info.numel > 0 else 1.0
        out[layer] = (layer_dtype(history, layer), w)
    return out


def _share(weights: dict[str, tuple[str | None, float]], rows: list, dtype: str) -> float | None:
    total = weight = 0.0
    for r in rows:
        dt, w = weights.get(r.layer, (None, 1.0))
        if dt != dtype or not is_num(r.zero_grad_ratio):
            continue
        total += w * min(max(float(r.zero_grad_ratio), 0.0), 1.0)
        weight += w
    return total / weight if weight else None


def _excess(history: History) -> list[tuple[int, float, float | None]]:
    """(step, excess zero share of float16 grads, float32 share) where scaling would help."""
    scaled = has_loss_scaling(history)
    weights = _weights(history)
    if not any(dt == "float16" for dt, _ in weights.values()):
        return []
    out = []
    for step, rows in rows_by_step(history).items():
        s = step_obs(history, step)
        scale = s.loss_scale if s is not None else None
        if scaled and not (is_num(scale) and scale <= 1.0):
            continue
        low = _share(weights, rows, "float16")
        if low is None:
            continue
        base = _share(weights, rows, "float32")
        out.append((step, low - (base or 0.0), base))
    return out


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    values = _excess(history)
    run, severity = sustained_severity(values, CRITICAL_SHARE, WARN_SHARE, SUSTAIN)
    if run is None:
        return []
    start, share, base = run[0]
    rows = rows_by_step(history).get(start, [])
    worst = sorted((r for r in rows if layer_dtype(history, r.layer) == "float16" and is_num(r.zero_grad_ratio)),
                   key=lambda r: -r.zero_grad_ratio)
    lines = [f"steps {start}-{run[-1][0]}: {share:.0%} of float16 gradient elements are exactly 0"
             + (f" beyond the float32 layers' {base:.0%}" if base is not None else ""),
             "no loss scaling in use" if not has_loss_scaling(history) else "loss scale <= 1 at these steps"]
    lines += [f"step {start}: {r.layer}: {r.zero_grad_ratio:.0%} zero" for r in worst[:4]]
    setup = fixes.setup_of(history)  # the loss scale starts from the latest loss (Setup.start_log_scale)
    fp16_params = any(layer_dtype(history, x) == "float16" for x in history.run.layers)
    title = f"float16 gradients underflow to 0 ({share:.0%} of elements) without loss scaling"
    return [Finding(CODE, severity, title, lines, start, [r.layer for r in worst],
                    [fixes.scaler_fix(setup, fp16_params), fixes.bf16_fix(setup)])]
