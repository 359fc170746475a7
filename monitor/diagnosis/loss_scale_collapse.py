"""loss_scale_collapse: the loss scale keeps falling, most steps skipped.

Normal and quiet: a GradScaler starting at 65536, or TRELLIS's 2**20, backs off (skips) several times in
its first steps until gradients fit ("settling"); afterwards a rare skip when the scale grows too far.

Over the steps that carry a loss scale (K = skipped steps so far, from skipped_total when recorded,
else counted from StepObs.skipped), critical at the first step j where either
  A. the scale is below SCALE_FLOOR (1.0) after having been >= 1.0 (no settling needs a scale below
     1: from 65536 that is 17+ halvings, from 2**20 21+), or
  B. after settling (from the first clean step on), within WINDOW (20) steps ending at j at least
     MIN_SKIPS (10, i.e. >= 50%) steps were skipped and the scale at j is lower than at the window start;
     9 skips in 20 steps is not critical.
  C. after settling, PERSIST (4) consecutive steps were skipped: the scale fell 16x below one that
     worked, and the overflow stays (a scale that merely outgrew the gradients costs one skip).
  A run of > MAX_SETTLE (32) skipped steps from the start is critical too (scale lost > 2**32).
Warning instead: after settling, >= WARN_SHARE (10%) of at least 20 steps skipped (>= 5 skips).
first_step: where the skipping began - walking back from j over skipped steps until a stretch of
CLEAN_GAP (10) clean steps, never into the settling phase of a run that had a clean step before j.
Localised modules (events "localized") are named: the first forward output (or backward gradient)
that went non-finite explains why backing off cannot help.
"""

from __future__ import annotations

from ..findings import Finding, Fix
from ..history import History, StepObs
from . import fixes
from .observe import first_forward_origin, has_loss_scaling, is_num, localized_events, origin_line, sorted_steps

CODE = "loss_scale_collapse"
SCALE_FLOOR = 1.0
WINDOW = 20
MIN_SKIPS = 10
MAX_SETTLE = 32
PERSIST = 4
CLEAN_GAP = 10
WARN_SHARE = 0.1


def _series(history: History) -> list[tuple[StepObs, int]]:
    """(step with a loss scale, skipped steps up to and including it)."""
    steps = sorted_steps(history)
    use_total = any(is_num(s.skipped_total) and s.skipped_total > 0 for s in steps)
    out, running = [], 0
    for s in steps:
        running += bool(s.skipped)
        k = int(s.skipped_total) if use_total and is_num(s.skipped_total) else running
        if is_num(s.loss_scale) and s.loss_scale >= 0:
            out.append((s, k))
    return out


def _detect(series: list[tuple[StepObs, int]]) -> int | None:
    """Index in `series` of the first step meeting A, B or the settle cap."""
    first_clean = next((s.step for s, _ in series if not s.skipped), None)
    seen_high = False
    lo, run, prev = 0, 0, None
    for j, (s, k) in enumerate(series):
        run = _consecutive(run, prev, s, k)
        prev = (s.step, k)
        if s.loss_scale < SCALE_FLOOR and seen_high:
            return j
        if first_clean is not None and s.step > first_clean and run >= PERSIST:
            return j
        seen_high = seen_high or s.loss_scale >= SCALE_FLOOR
        if first_clean is None and k > MAX_SETTLE:
            return j
        while series[lo][0].step < s.step - WINDOW:
            lo += 1
        start, k0 = series[lo]
        if first_clean is not None and start.step >= first_clean and k - k0 >= MIN_SKIPS \
                and s.loss_scale < start.loss_scale:
            return j
    return None


def _consecutive(run: int, prev: tuple[int, int] | None, s: StepObs, k: int) -> int:
    """Length of the run of consecutive skipped steps ending at `s` (sparse histories: a skipped
    observation whose skip count grew by the step gap stands for every step since the previous one)."""
    if not s.skipped:
        return 0
    if prev is None:
        return 1
    gap, new = s.step - prev[0], k - prev[1]
    return run + gap if new >= gap else max(new, 1)


def _start(series: list[tuple[StepObs, int]], j: int) -> int:
    """Index of the step where the collapse detected at j began: walking back from j over the skips,
    stopping at a stretch of >= CLEAN_GAP clean steps, and never entering the settling phase (the
    skips before the first clean step) unless the run never had a clean step before j."""
    first_clean = next((s.step for s, _ in series if not s.skipped), None)
    settled = first_clean is not None and first_clean < series[j][0].step
    start, clean = j, 0
    for i in range(j, 0, -1):
        s, k = series[i]
        prev, prev_k = series[i - 1]
        if settled and s.step <= first_clean:
            return start
        if k > prev_k or s.skipped:
            start, clean = i, 0
        else:
            clean += s.step - prev.step
            if clean >= CLEAN_GAP:
                return start
    return 0 if series[0][0].skipped and not settled else start


def _localized_lines(history: History) -> tuple[list[str], list[str], str | None]:
    """(evidence, layers, forward-origin module): the first module whose forward output went
    non-finite by itself (see observe.forward_origins), else the first non-finite backward gradient."""
    origin = first_forward_origin(history)
    if origin:
        e, steps = origin
        line = origin_line(e)
        if len(steps) > 1:
            line += f"; again on steps {', '.join(map(str, steps[1:6]))}"
        return [line], [e.layer], e.layer
    backward = localized_events(history, "backward")
    if backward:
        e = backward[0]
        return ([f"step {e.step}: first non-finite gradient in the backward pass at {e.layer} "
                 f"({e.detail.get('dtype', '?')}); no forward output was non-finite"], [e.layer], None)
    return [], [], None


def _fixes(history: History, forward: str | None) -> list[Fix]:
    setup = fixes.setup_of(history)
    out = [fixes.module_fp32_fix(forward)] if forward else []
    out.append(fixes.bf16_fix(setup))
    if any(s.loss is not None and not is_num(s.loss) for s in history.steps if isinstance(s, StepObs)):
        out.append(fixes.loss_eps_fix())
    return out


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    if not has_loss_scaling(history):
        return []
    series = _series(history)
    if len(series) < 2:
        return []
    j = _detect(series)
    if j is None:
        return _warning(history, series)
    i = _start(series, j)
    first, last = series[i][0], series[j][0]
    before = series[i - 1][0].loss_scale if i else first.loss_scale
    skips = series[j][1] - (series[i - 1][1] if i else 0)
    lines = [f"loss scale {before:g} -> {last.loss_scale:g} from step {first.step} to {last.step}; "
             f"{skips} of {last.step - first.step + 1} steps skipped",
             f"latest: step {series[-1][0].step}, loss scale {series[-1][0].loss_scale:g}, "
             f"{series[-1][1]} skipped steps in total"]
    loc, layers, forward = _localized_lines(history)
    if forward:
        lines.append(f"a loss scale cannot fix a forward overflow: {forward} overflows before any scaling")
    title = "Loss scale collapsing: it keeps falling and most steps are skipped"
    return [Finding(CODE, "critical", title, lines + loc, first.step, layers, _fixes(history, forward))]


def _warning(history: History, series: list[tuple[StepObs, int]]) -> list[Finding]:
    clean = next((n for n, (s, _) in enumerate(series) if not s.skipped), None)
    if clean is None:
        return []
    start, end = series[clean], series[-1]
    steps, skips = end[0].step - start[0].step + 1, end[1] - start[1]
    if steps < WINDOW or skips < 5 or skips < WARN_SHARE * steps:
        return []
    lines = [f"after settling (step {start[0].step}): {skips} of {steps} steps skipped; "
             f"loss scale now {end[0].loss_scale:g}"]
    loc, layers, forward = _localized_lines(history)
    first = next((s.step for s, _ in series[clean:] if s.skipped), start[0].step)
    return [Finding(CODE, "warning", "Frequent skipped steps after the loss scale settled", lines + loc,
                    first, layers, _fixes(history, forward))]
