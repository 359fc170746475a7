"""lr_too_high: update/parameter ratio far above the usual ~1e-3 for many steps.

Per sampled, not-skipped step: the MEDIAN over layers of update_ratio (finite, > 0; layers whose
parameter norm is 0, e.g. a zero-initialised output layer, are left out). One odd layer cannot move
the median. Reported at the start of the first run of >= SUSTAIN (5) consecutive sampled steps with
that median >= CRITICAL_RATIO (0.1, 100x usual) -> critical, else of >= SUSTAIN steps >= WARN_RATIO
(0.03, 30x usual) -> warning. 4 steps in a row are not enough; a ratio exactly at a threshold counts.
The fix proposes lr x 1e-3 / median ratio (one significant digit), from the lr at the start of that run
of steps ("now": the latest lr observed); a warm-up only when the lr did not rise before and the run
starts within the first WARMUP_STEPS steps (it cannot help later).
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History, StepObs
from . import fixes
from .observe import is_num, median, rows_by_step, sorted_steps
from .sustained import sustained_severity

CODE = "lr_too_high"
USUAL = 1e-3
WARN_RATIO = 3e-2
CRITICAL_RATIO = 1e-1
SUSTAIN = 5
WARMUP_STEPS = 1000  # a warm-up is offered only for a constant lr too high within its first steps


def _medians(history: History) -> list[tuple[int, float, str, float]]:
    """(step, median ratio, hottest layer, its ratio) per sampled, not-skipped step."""
    skipped = {s.step for s in sorted_steps(history) if s.skipped}
    out = []
    for step, rows in rows_by_step(history).items():
        if step in skipped:
            continue
        vals = [(r.layer, float(r.update_ratio)) for r in rows
                if is_num(r.update_ratio) and r.update_ratio > 0 and not (is_num(r.param_norm) and r.param_norm == 0)]
        if vals:
            hot = max(vals, key=lambda v: v[1])
            out.append((step, median(v for _, v in vals), hot[0], hot[1]))
    return out


def _lr_change(steps: list[StepObs], before: int) -> str | None:
    lrs = [(s.step, s.lr[0]) for s in steps if s.lr and is_num(s.lr[0])]
    for (_, a), (step, b) in zip(lrs, lrs[1:]):
        if step <= before + SUSTAIN and b > 2 * a:
            return f"step {step}: lr rose from {a:g} to {b:g}"
    return None


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    meds = _medians(history)
    run, severity = sustained_severity(meds, CRITICAL_RATIO, WARN_RATIO, SUSTAIN)
    if run is None:
        return []
    start = run[0][0]
    med = median(m[1] for m in run)
    hot = max(run, key=lambda m: m[3])
    lines = [f"steps {start}-{run[-1][0]}: median update/param ratio {med:.3g} over the layers "
             f"(usual ~{USUAL:g}); highest {hot[3]:.3g} in {hot[2]} at step {hot[0]}"]
    steps = sorted_steps(history)
    change = _lr_change(steps, start)
    if change:
        lines.append(change)
    setup = fixes.setup_of(history)
    at_start = next((s.lr[0] for s in steps if s.step >= start and s.lr and is_num(s.lr[0])), setup.lr)
    new_lr = float(f"{at_start * USUAL / med:.0e}")
    title = f"Learning rate too high: updates are {med / USUAL:.0f}x the usual size relative to the weights"
    fix_list = [fixes.lr_fix(setup, new_lr)]
    if change is None and start <= WARMUP_STEPS:  # a constant lr, too high from the first steps on
        fix_list.append(fixes.warmup_fix(WARMUP_STEPS))
    return [Finding(CODE, severity, title, lines, start, (), fix_list)]
