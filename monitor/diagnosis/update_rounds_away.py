"""update_rounds_away (warning): 16-bit weights whose updates round away - they stop changing, no NaN anywhere.

Observed, per layer whose parameters are bf16/fp16 and which the optimizer updates itself (not under an
fp32 master copy): on sampled, not-skipped steps with a positive lr and the layer's gradients finite and
non-zero, excess = update_unchanged_ratio - zero_grad_ratio (elements without a gradient may stay put
legitimately). A layer is flagged at the start of its first run of >= SUSTAIN (3) consecutive such steps
with excess >= SHARE (0.5). first_step: the earliest start; layers: every flagged layer, earliest first.

Pre-flight (first_step 0), for layers no observed step has judged yet: an Adam-family optimizer (its step
is ~lr per element, exactly lr on the first step), a trainable 16-bit layer it updates in place, and its
group's lr below half an ulp of the layer's typical |w| (LayerInfo.typical_abs, measured at watch()).

Fixes: fp32 master weights; stochastic rounding (torchao, bf16 only); a higher lr only when the lr is
below half an ulp of the flagged layers' typical |w| (the lr is then the cause) and one ulp is <= 1e-3.
"""

from __future__ import annotations

import math

from ..findings import Finding
from ..history import History, LayerObs
from . import fixes, stability_fixes
from .numerics import is_low_precision, normalize_dtype, ulp
from .observe import adam_family, count, fmt_layers, is_num, layer_groups, layer_info, rows_by_step, step_obs

CODE = "update_rounds_away"
SHARE = 0.5
SUSTAIN = 3
MAX_RAISED_LR = 1e-3


def _exposed(history: History) -> list[str]:
    """Trainable 16-bit layers the optimizer updates in place."""
    out = []
    for name in history.run.layers:
        info = layer_info(history, name)
        if info is not None and info.trainable and info.in_optimizer and is_low_precision(info.dtype):
            out.append(name)
    return out


def _excess(history: History, row: LayerObs) -> float | None:
    """Unchanged share beyond the zero-gradient share, on a step that asked the layer to move; else None."""
    step = step_obs(history, row.step)
    if step is None or step.skipped or not (step.lr and all(is_num(x) for x in step.lr) and max(step.lr) > 0):
        return None
    if not is_num(row.update_unchanged_ratio) or not is_num(row.grad_norm) or row.grad_norm <= 0:
        return None
    if count(row.grad_nonfinite) or count(row.param_nonfinite):
        return None
    zero = float(row.zero_grad_ratio) if is_num(row.zero_grad_ratio) else 0.0
    return float(row.update_unchanged_ratio) - zero


def _observed(history: History, layers: list[str]) -> tuple[dict[str, tuple[int, int, float]], set[str]]:
    """({layer: (first step, last step, mean excess) of its first sustained run}, layers judged on
    >= SUSTAIN steps)."""
    runs: dict[str, list[tuple[int, float]]] = {}
    judged: dict[str, int] = {}
    flagged: dict[str, tuple[int, int, float]] = {}
    for step, rows in rows_by_step(history).items():
        for row in rows:
            if row.layer not in layers or row.layer in flagged:
                continue
            excess = _excess(history, row)
            if excess is None:
                continue
            judged[row.layer] = judged.get(row.layer, 0) + 1
            run = runs[row.layer] = [*runs.get(row.layer, []), (step, excess)] if excess >= SHARE else []
            if len(run) >= SUSTAIN:
                flagged[row.layer] = (run[0][0], run[-1][0], sum(e for _, e in run) / len(run))
    return flagged, {name for name, n in judged.items() if n >= SUSTAIN}


def _predicted(history: History, layers: list[str]) -> dict[str, tuple[float, float, float, str]]:
    """{layer: (lr, typical |w|, half an ulp of it, dtype)} where an Adam step of ~lr rounds away."""
    if not adam_family(history.run.optimizer):
        return {}
    out = {}
    for name in layers:
        info = layer_info(history, name)
        typical = getattr(info, "typical_abs", None)
        lrs = [g.lr for g in layer_groups(history, name) if is_num(g.lr)]
        if info is None or not is_num(typical) or typical <= 0 or not lrs:
            continue
        dtype = normalize_dtype(info.dtype) or ""
        half = ulp(float(typical), dtype) / 2
        if 0 < max(lrs) < half:
            out[name] = (max(lrs), float(typical), half, dtype)
    return out


def _ceil1(x: float) -> float:
    """x rounded up to one significant digit."""
    unit = 10.0 ** math.floor(math.log10(x))
    return float(f"{math.ceil(x / unit - 1e-9) * unit:.1g}")


def _fixes(history: History, predicted: dict[str, tuple[float, float, float, str]],
           layers: list[str]) -> list:
    setup = fixes.setup_of(history)
    out = [stability_fixes.rounding_master_fix(setup)]
    if any(normalize_dtype(getattr(layer_info(history, n), "dtype", None)) == "bfloat16" for n in layers):
        out.append(stability_fixes.stochastic_rounding_fix(setup))
    causes = [predicted[name] for name in layers if name in predicted]
    if causes:
        lr, typical, half, dtype = max(causes, key=lambda c: c[2])
        new_lr = _ceil1(2 * half)  # one ulp: every Adam step of ~lr then moves the weight
        if new_lr <= MAX_RAISED_LR:
            out.append(stability_fixes.raise_lr_fix(setup, new_lr, f"an Adam step of ~lr is below half an ulp "
                                                   f"({half:.2g}) of the typical |w| {typical:.3g} in {dtype}"))
    return out


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    layers = _exposed(history)
    if not layers:
        return []
    flagged, judged = _observed(history, layers)
    predicted = _predicted(history, layers)
    if flagged:
        names = sorted(flagged, key=lambda n: (flagged[n][0], layers.index(n)))
        lines = [f"{n}: {flagged[n][2]:.0%} of its elements (beyond those with a zero gradient) left exactly "
                 f"unchanged by steps {flagged[n][0]}-{flagged[n][1]}, gradients finite and non-zero"
                 for n in names[:6]]
        if len(names) > 6:
            lines.append(f"also {fmt_layers(names[6:])}")
        lines += [_why(n, predicted[n]) for n in names if n in predicted][:3]
        title = f"Updates round away in {len(names)} 16-bit layer(s): their weights stopped changing"
        return [Finding(CODE, "warning", title, lines, flagged[names[0]][0], names, _fixes(history, predicted, names))]
    ahead = [n for n in predicted if n not in judged]
    if not ahead:
        return []
    lines = [_why(n, predicted[n]) for n in ahead[:6]]
    lines.append(f"{len(ahead)} layer(s): {fmt_layers(ahead)}; an Adam step is ~lr per element, so these "
                 "weights will not change")
    title = f"lr below the resolution of {len(ahead)} 16-bit layer(s): their updates will round away"
    return [Finding(CODE, "warning", title, lines, 0, ahead, _fixes(history, predicted, ahead))]


def _why(name: str, p: tuple[float, float, float, str]) -> str:
    lr, typical, half, dtype = p
    return f"{name}: lr {lr:.3g} < half an ulp ({half:.3g}) of its typical |w| {typical:.3g} in {dtype}"
