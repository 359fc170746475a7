"""adam_second_moment_lag (warning): a layer's gradients outgrew Adam's second-moment estimate, ahead of a
likely loss spike.

Per sampled, not-skipped step and layer: adam_rms_ratio = RMS over elements of g^2 / max(v_hat, eps^2),
v_hat the bias-corrected exp_avg_sq after the step's update (Wortsman et al. 2023, arXiv 2304.13013: loss
spikes followed 1-8 steps after it rose above 1). It is ~1 while exp_avg_sq tracks g^2 and at most
sqrt(bc / (1 - beta2)) (31.6 for beta2 = 0.999, 4.5 for 0.95); healthy noisy runs reach ~3.5 (bench and
tests), so the warning needs >= WARN (5, g^2 ~25x what v expects) in some layer. Not counted: rows
with non-finite gradients or parameters, and fp16 state with exp_avg_sq elements at 0 (an underflow:
the ratio is then g^2 / eps^2, adam_eps_underflow's case). first_step: the first
such step; layers: those >= WARN there, largest first. The largest ratio later on and how many sampled
steps stayed above WARN go into the evidence.
"""

from __future__ import annotations

from ..findings import Finding
from ..history import History, LayerObs
from . import fixes, stability_fixes
from .observe import count, fmt_layers, is_num, rows_by_step, state_dtype, step_obs

CODE = "adam_second_moment_lag"
WARN = 5.0

__all__ = ["CODE", "WARN", "lagging_steps", "rule"]


def _lagging(history: History, row: LayerObs) -> bool:
    """Not a lag: a broken step (non-finite gradients or parameters), or fp16 state whose exp_avg_sq
    rounded to 0 (g^2 / eps^2: adam_eps_underflow's and fp16_optimizer_state's case, not a stale v)."""
    if count(row.grad_nonfinite) or count(row.param_nonfinite):
        return False
    return not (state_dtype(history, row.layer) == "float16" and is_num(row.state_zero_ratio)
                and row.state_zero_ratio > 0)


def lagging_steps(history: History) -> list[tuple[int, list[tuple[str, float]]]]:
    """[(step, [(layer, ratio >= WARN), ...] largest first), ...] over sampled, not-skipped steps."""
    out = []
    for step, rows in rows_by_step(history).items():
        obs = step_obs(history, step)
        if obs is not None and obs.skipped:
            continue
        hot = sorted(((r.layer, float(r.adam_rms_ratio)) for r in rows
                      if is_num(r.adam_rms_ratio) and r.adam_rms_ratio >= WARN and _lagging(history, r)),
                     key=lambda x: -x[1])
        if hot:
            out.append((step, hot))
    return out


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    lagging = lagging_steps(history)
    if not lagging:
        return []
    step, hot = lagging[0]
    layer, ratio = hot[0]
    lines = [f"step {step}: RMS(g^2 / v_hat) = {ratio:.3g} in {layer} (~1 while Adam's exp_avg_sq tracks "
             f"the squared gradients; >= {WARN:g} here: the gradients are ~{ratio * ratio:.0f}x larger in "
             "square than it expects, so the update is several times Adam's usual ~lr)"]
    if len(hot) > 1:
        lines.append(f"also >= {WARN:g} at step {step}: {fmt_layers([name for name, _ in hot[1:]])}")
    peak_step, peak = max(((s, h[0]) for s, h in lagging), key=lambda x: x[1][1])
    if peak_step != step:
        lines.append(f"largest: {peak[1]:.3g} in {peak[0]} at step {peak_step}")
    lines.append(f"{len(lagging)} sampled step(s) with a layer >= {WARN:g}; loss spikes followed such "
                 "steps by 1-8 steps in Wortsman et al. 2023")
    setup = fixes.setup_of(history)
    title = f"Adam's second-moment estimate lags the gradients of {layer} (RMS {ratio:.3g}): a loss spike is likely"
    return [Finding(CODE, "warning", title, lines, step, [name for name, _ in hot],
                    [stability_fixes.beta2_fix(setup), stability_fixes.update_clipping_fix(setup),
                     fixes.warmup_fix(100)])]
