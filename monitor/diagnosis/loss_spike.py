"""loss_spike (warning): the loss jumps far above its recent level.

Over the observed steps with a finite loss (sampled and skipped steps both carry it), step t is a spike
when, against the previous up to WINDOW (128) such losses (at least MIN_HISTORY, 16): the robust z-score
(loss - median) / (1.4826 MAD) > Z (6, as OLMo-core), the MAD floored at 1% of |median| so a flat loss
does not make every wiggle infinite, and the next observed loss still has z > Z / 2 against the same
window (a single odd batch is not a spike: such batches reach z ~10 on small noisy batches, while an
optimizer spike lasts); or, as a backstop (Megatron), loss >= BACKSTOP (10) x the median (median > 0),
at once. The first spike is reported; first_step = its step (a z spike is confirmed one observation
later; a loss that jumped before MIN_HISTORY observations existed is dated back to the start of the run
of losses that stand out as much). Evidence: the numbers, whether the loss
came back under 2x the median, and what preceded it: an Adam second-moment lag (adam_second_moment_lag)
in the SPIKE_AFTER_LAG (8) steps before (not at the spike's own step: its loss was computed before that
update), or an lr increase in the 10 steps before. Fixes follow that cause:
beta2 / update clipping after a lag, the previous lr after an lr increase, else gradient clipping and a
lower lr.
"""

from __future__ import annotations

import bisect
import math

from ..findings import Finding
from ..history import History, StepObs
from . import fixes, stability_fixes
from .adam_second_moment_lag import lagging_steps
from .observe import has_loss_scaling, is_num, median, sorted_steps

CODE = "loss_spike"
WINDOW = 128
MIN_HISTORY = 16
Z = 6.0
BACKSTOP = 10.0
MAD_FLOOR = 0.01
SPIKE_AFTER_LAG = 8
LR_LOOKBACK = 10


def _z(value: float, window: list[float], med: float) -> tuple[float, float]:
    """(robust z of `value`, MAD) against the sorted `window` with median `med`."""
    mad = median(abs(x - med) for x in window) or 0.0
    scale = 1.4826 * max(mad, MAD_FLOOR * abs(med))
    return ((value - med) / scale if scale > 0 else math.inf if value > med else 0.0), mad


def first_spike(losses: list[tuple[int, float]]) -> tuple[int, int, float, float, float] | None:
    """(index where the spike began, index where it was detected, z, median, MAD) of the first spike;
    `losses` finite, in step order. Detection can come later than the start when the loss jumped before
    MIN_HISTORY observations existed: the start is then the first of the run of losses just before it
    that stand out as much against the same window. The window is kept sorted, so the median is a
    lookup; the MAD is computed only where the floor cannot clear."""
    window: list[float] = []  # the previous <= WINDOW losses, sorted
    for i, (_, value) in enumerate(losses):
        if i >= MIN_HISTORY:
            mid = len(window) // 2
            med = window[mid] if len(window) % 2 else (window[mid - 1] + window[mid]) / 2
            backstop = med > 0 and value >= BACKSTOP * med
            if backstop or value - med > Z * 1.4826 * MAD_FLOOR * abs(med):
                z, mad = _z(value, window, med)
                # one odd batch is not a spike: the next observed loss must still stand out (z > Z / 2)
                confirmed = i + 1 < len(losses) and _z(losses[i + 1][1], window, med)[0] > Z / 2
                if backstop or (z > Z and confirmed):
                    start = i
                    while start > 0 and _stands_out(losses[start - 1][1], window, med, backstop):
                        start -= 1
                    return start, i, z, med, mad
        if i >= WINDOW:
            del window[bisect.bisect_left(window, losses[i - WINDOW][1])]
        bisect.insort(window, value)
    return None


def _stands_out(value: float, window: list[float], med: float, backstop: bool) -> bool:
    if backstop:
        return value >= BACKSTOP * med
    return _z(value, window, med)[0] > Z


def _lr_rise(steps: list[StepObs], spike: int) -> tuple[int, float, float] | None:
    """(step, lr before, lr after) of the last lr increase (> 1.5x) within LR_LOOKBACK steps up to the spike."""
    lrs = [(s.step, s.lr[0]) for s in steps if s.lr and is_num(s.lr[0]) and s.step <= spike]
    rises = [(step, a, b) for (_, a), (step, b) in zip(lrs, lrs[1:]) if b > 1.5 * a and step >= spike - LR_LOOKBACK]
    return rises[-1] if rises else None


def _cause(history: History, spike: int) -> tuple[list[str], list]:
    """Evidence lines about what preceded the spike, and the fixes that match it."""
    setup = fixes.setup_of(history)
    # the loss of step t comes from the weights before update t: only an earlier lag can have caused it
    lag = [(s, hot) for s, hot in lagging_steps(history) if spike - SPIKE_AFTER_LAG <= s < spike]
    if lag:
        step, hot = lag[0]
        return ([f"step {step} ({spike - step} step(s) before): Adam's second moment lagged the gradients of "
                 f"{hot[0][0]} (RMS(g^2 / v_hat) {hot[0][1]:.3g}; see adam_second_moment_lag)"],
                [stability_fixes.beta2_fix(setup), stability_fixes.update_clipping_fix(setup), fixes.warmup_fix(100)])
    rise = _lr_rise(sorted_steps(history), spike)
    if rise:
        step, before, after = rise
        return ([f"step {step}: lr rose from {before:.3g} to {after:.3g}"],
                [fixes.lr_fix(setup, before, after), fixes.warmup_fix(100)])
    norms = [s.grad_norm_total for s in sorted_steps(history) if s.step < spike and is_num(s.grad_norm_total)]
    clip_at = float(f"{2 * (median(norms[-20:]) or 0.5):.0e}")
    return [], [fixes.clip_fix(clip_at, has_loss_scaling(history)), fixes.lr_fix(setup, float(f"{setup.lr / 2:.0e}"),
                                                                                 setup.lr), fixes.warmup_fix(100)]


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    losses = [(s.step, float(s.loss)) for s in sorted_steps(history) if is_num(s.loss)]
    found = first_spike(losses)
    if found is None:
        return []
    start, i, z, med, mad = found
    step, value = losses[start]
    times = f"{value / med:.3g}x the median" if med > 0 else f"median {med:.4g}"
    lines = [f"step {step}: loss {value:.4g}, {times} (median {med:.4g}, MAD {mad:.3g} over the "
             f"{min(i, WINDOW)} observed steps before step {losses[i][0]})"]
    if i != start:
        lines.append(f"detected at step {losses[i][0]} (robust z {z:.3g}), once {MIN_HISTORY} observations "
                     f"existed; the loss stood as high from step {step} on")
    else:
        lines[0] += f"; robust z {z:.3g}"
    back = next((s for s, v in losses[i + 1:] if med > 0 and v < 2 * med), None)
    if back is not None:
        lines.append(f"back under 2x the median at step {back}")
    elif len(losses) > i + 1 and med > 0:
        lines.append(f"still {losses[-1][1] / med:.3g}x the median at the last observed step {losses[-1][0]}")
    cause, fix_list = _cause(history, step)
    title = f"Loss spike at step {step}: {value:.4g} against a recent median of {med:.4g}"
    return [Finding(CODE, "warning", title, [*lines, *cause], step, (), fix_list)]
