"""adam_eps_underflow: Adam's denominator sqrt(exp_avg_sq) + eps can be exactly 0 in fp16/bf16 state.

Two modes:
- PRE-FLIGHT (RunInfo alone, first_step 0): an Adam-family optimizer, not fused, updates tensors whose
  state is float16/bfloat16 (LayerInfo.state_dtype, or the parameter dtype when the optimizer updates
  the layer's own tensors), and its eps, stored in that dtype,
  - rounds to 0 (fp16: eps <= 2**-25 ~ 2.98e-8, e.g. PyTorch's default 1e-8) -> critical;
  - survives only as a subnormal (fp16: 2.98e-8 < eps < 6.1e-5) -> warning (steps up to lr*|g|/eps).
  bf16 holds any eps above ~9e-41, so bf16 state is only flagged for absurd eps.
  fused=True groups compute the update in fp32 and are never flagged.
- OBSERVED (first_step = the step): in a float16/bfloat16 layer the optimizer updates, parameters went
  non-finite in the update while gradients were finite, and either exp_avg_sq was zero in
  >= STATE_ZERO_MIN of its elements or eps rounds to 0 in that dtype -> critical. Layers listed are
  those that broke at that first step (never fp32 layers).
"""

from __future__ import annotations

from ..findings import Finding
from ..history import GroupInfo, History
from . import fixes
from .evidence import LayerLine, aggregate
from .numerics import FORMATS, adam_state_underflow_grad, eps_is_subnormal, eps_rounds_to_zero
from .observe import (
    adam_family,
    broke_in_update,
    count,
    fmt_layers,
    is_num,
    layer_dtype,
    layer_groups,
    prev_layer_rows,
    rows_by_step,
    state_dtype,
    step_obs,
)

CODE = "adam_eps_underflow"
STATE_ZERO_MIN = 0.5


def _bad_eps(history: History, layer: str, dtype: str) -> tuple[str, GroupInfo] | None:
    """('zero' | 'subnormal', group) for the worst non-fused group holding `layer`, else None."""
    worst = None
    for g in layer_groups(history, layer):
        if g.fused is True or not is_num(g.eps):
            continue
        if eps_rounds_to_zero(g.eps, dtype):
            return "zero", g
        if worst is None and eps_is_subnormal(g.eps, dtype):
            worst = ("subnormal", g)
    return worst


def _exposed(history: History) -> dict[str, tuple[str, str, GroupInfo]]:
    """layer -> (state dtype, 'zero' | 'subnormal', group) for every layer at risk before any step."""
    out = {}
    for layer in history.run.layers:
        dtype = state_dtype(history, layer)
        if dtype in ("float16", "bfloat16"):
            bad = _bad_eps(history, layer, dtype)
            if bad:
                out[layer] = (dtype, *bad)
    return out


def exposed_layers(history: History) -> set[str]:
    """Layers the pre-flight half of this rule flags (critical or warning); empty for non-Adam."""
    return set(_exposed(history)) if adam_family(history.run.optimizer) else set()


def _eps_line(dtype: str, group: GroupInfo) -> str:
    fmt = FORMATS[dtype]
    return (f"eps {group.eps:g} stored in {dtype} (smallest subnormal {fmt.smallest_subnormal:.3g}, "
            f"smallest normal {fmt.smallest_normal:.3g}) "
            + ("rounds to 0" if eps_rounds_to_zero(group.eps, dtype) else "is subnormal")
            + f"; fused={group.fused}")


def _state_line(dtype: str, group: GroupInfo) -> str:
    beta2 = group.betas[1] if isinstance(group.betas, tuple) and len(group.betas) == 2 else 0.999
    first = adam_state_underflow_grad(dtype, beta2 if is_num(beta2) else 0.999, first_step=True)
    later = adam_state_underflow_grad(dtype, first_step=False)
    return (f"exp_avg_sq rounds to 0 in {dtype} for |grad| < {first:.2g} on the first step "
            f"((1-beta2)*g^2 < half the smallest subnormal) and < {later:.2g} later; "
            "the update then divides by eps alone")


def _observed(history: History, exposed: dict) -> tuple[int, list[str], list[str], tuple[str, ...]] | None:
    """(step, layers, evidence, per-layer details) of the first update that broke low-precision Adam layers."""
    at_risk = {layer: dtype for layer in history.run.layers
               if (dtype := state_dtype(history, layer)) in ("float16", "bfloat16")
               and not all(g.fused is True for g in layer_groups(history, layer))}
    if not at_risk:
        return None
    for step, rows in rows_by_step(history).items():
        prev = prev_layer_rows(history, step)
        hit: list[LayerLine] = []
        for r in rows:
            dtype = at_risk.get(r.layer)
            if dtype is None or not count(r.param_nonfinite):
                continue
            zero = r.state_zero_ratio if is_num(r.state_zero_ratio) else None
            if not broke_in_update(r, prev.get(r.layer), step_obs(history, step)):
                continue
            if (zero is not None and zero >= STATE_ZERO_MIN) or exposed.get(r.layer, ("", ""))[1] == "zero":
                share = f"{zero:.0%}" if zero is not None else "not measured"
                hit.append(LayerLine(r.layer, float(r.param_nonfinite), (
                    f"step {step}: {r.layer} ({dtype}) {r.param_nonfinite} non-finite parameter elements after "
                    f"optimizer.step(), gradients finite, exp_avg_sq == 0: {share}")))
        if hit:
            broke = {h.layer for h in hit}
            shares = [r.state_zero_ratio for r in rows if r.layer in broke and is_num(r.state_zero_ratio)]
            zeros = f" ({min(shares):.0%}-{max(shares):.0%} of exp_avg_sq == 0)" if shares else ""
            summary, details = aggregate(f"step {step}: non-finite parameter elements right after optimizer.step() "
                                         f"with finite gradients{zeros}", hit, lambda v: f"{v:.0f}")
            lines = [summary]
            fine = [r.layer for r in rows if layer_dtype(history, r.layer) == "float32"
                    and r.param_nonfinite == 0]
            if fine:
                lines.append(f"step {step}: float32 layers stayed finite: {fmt_layers(fine, 3)}")
            return step, [h.layer for h in hit], lines, details
    return None


def _fixes(history: History) -> list:
    setup = fixes.setup_of(history)
    out = [fixes.master_weights_fix(setup)]
    if fixes.supports_fused(setup):
        out.append(fixes.fused_fix(setup))
    return out + [fixes.eps_fix(setup), fixes.amsgrad_fix(setup)]


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    name = history.run.optimizer
    if not adam_family(name):
        return []
    exposed = _exposed(history)
    observed = _observed(history, exposed)
    if not exposed and not observed:
        return []
    critical = [k for k, v in exposed.items() if v[1] == "zero"]
    layers = critical or list(exposed)
    pre_lines = []
    if layers:
        dtype, _, group = exposed[layers[0]]
        pre_lines = [f"{name} updates {len(layers)} layer(s) with {dtype} state directly: {fmt_layers(layers, 3)}",
                     _eps_line(dtype, group), _state_line(dtype, group)]
    if observed:
        step, hit, lines, details = observed
        title = (f"{name}: parameters became non-finite in the update at step {step} "
                 "(sqrt(exp_avg_sq) + eps == 0 in low-precision optimizer state)")
        # the aggregated breakage, then its cause (eps), then the rest
        ordered = lines[:1] + pre_lines[1:2] + lines[1:] + pre_lines[:1] + pre_lines[2:]
        return [Finding(CODE, "critical", title, ordered, step, hit, _fixes(history), details)]
    if critical:
        title = (f"{name} eps {group.eps:g} rounds to 0 in {dtype} optimizer state: "
                 "expect NaN/Inf parameters from the first step")
    else:
        title = (f"{name} eps {group.eps:g} is subnormal in {dtype} optimizer state: "
                 "oversized steps wherever exp_avg_sq underflows")
    return [Finding(CODE, "critical" if critical else "warning", title, pre_lines, 0, layers, _fixes(history))]
