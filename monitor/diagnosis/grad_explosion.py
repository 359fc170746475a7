"""grad_explosion: the global gradient norm jumps far above its recent median.

Over sampled steps with a finite, positive grad_norm_total (skipped steps and non-finite norms are
left out), a step t is a spike when norm(t) >= SPIKE (10) x the median of the previous up to WINDOW
(20) norms, given at least MIN_HISTORY (5) of them. The first spike is reported:
- critical when norm(t) >= CRITICAL (100) x the median, or when within DIVERGE_STEPS (10) steps after t
  the loss, gradients or parameters go non-finite, or the norm is >= SPIKE x that median on
  SUSTAIN (3) or more sampled steps in t..t+DIVERGE_STEPS (counting t);
- warning otherwise (an isolated 10-100x spike that training survived).
Exactly 10x is a spike; 9.99x is not.
Every fix only mitigates (the monitor cannot see what made the gradient jump): clipping, a lower lr (a
tenth of the latest one), and a warm-up for a spike within the first WARMUP_STEPS steps.
"""

from __future__ import annotations

import bisect

from ..findings import Finding
from ..history import History, StepObs
from . import fixes
from .observe import count, has_loss_scaling, is_num, nonfinite, sorted_steps

CODE = "grad_explosion"
SPIKE = 10.0
CRITICAL = 100.0
WINDOW = 20
MIN_HISTORY = 5
DIVERGE_STEPS = 10
SUSTAIN = 3
WARMUP_STEPS = 1000  # a warm-up is offered only for a spike within its first steps


def _first_spike(norms: list[tuple[int, float]]) -> tuple[int, float, float] | None:
    """(index into norms, ratio, median before) of the first spike. Norms are finite and > 0."""
    window: list[float] = []  # the previous <= WINDOW norms, kept sorted
    for i, (_, value) in enumerate(norms):
        if i >= MIN_HISTORY:
            mid = len(window) // 2
            med = window[mid] if len(window) % 2 else (window[mid - 1] + window[mid]) / 2
            if value >= SPIKE * med:
                return i, value / med, med
        if i >= WINDOW:
            del window[bisect.bisect_left(window, norms[i - WINDOW][1])]
        bisect.insort(window, value)
    return None


def _diverged(steps: list[StepObs], start: int) -> int | None:
    for s in steps:
        if start <= s.step <= start + DIVERGE_STEPS and (
                nonfinite(s.loss) or count(s.grad_nonfinite) or count(s.param_nonfinite)
                or nonfinite(s.grad_norm_total)):
            return s.step
    return None


def _nice(x: float) -> float:
    """x rounded to one significant digit."""
    return float(f"{x:.0e}")


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    steps = sorted_steps(history)
    norms = [(s.step, float(s.grad_norm_total)) for s in steps
             if not s.skipped and is_num(s.grad_norm_total) and s.grad_norm_total > 0]
    spike = _first_spike(norms)
    if spike is None:
        return []
    i, ratio, med = spike
    step, value = norms[i]
    lines = [f"step {step}: global grad norm {value:.4g} = {ratio:.1f}x the median {med:.4g} "
             f"of the previous {min(i, WINDOW)} sampled steps"]
    high = [s for s, n in norms[i:] if n >= SPIKE * med and s <= step + DIVERGE_STEPS]
    diverged = _diverged(steps, step)
    if len(high) > 1:
        lines.append(f"norm stayed >= {SPIKE:g}x the median on {len(high)} sampled steps")
    if diverged is not None:
        lines.append(f"step {diverged}: non-finite loss, gradients or parameters followed")
    critical = ratio >= CRITICAL or diverged is not None or len(high) >= SUSTAIN
    setup = fixes.setup_of(history)  # the latest lr, not the one at attach time
    fix_list = [fixes.clip_fix(_nice(max(2 * med, 1e-6)), has_loss_scaling(history)),
                fixes.mitigation(fixes.lr_fix(setup, _nice(setup.lr / 10)), "smaller steps survive a spike")]
    if step <= WARMUP_STEPS:
        fix_list.append(fixes.warmup_fix(WARMUP_STEPS))
    title = f"Gradient norm spiked {ratio:.0f}x above its recent median at step {step}"
    return [Finding(CODE, "critical" if critical else "warning", title, lines, step, (), fix_list)]
