"""Adam second-moment lag: per tensor, the sum over elements of g^2 / max(v_hat, eps^2), device-side.

Wortsman et al. 2023 (arXiv 2304.13013, the StableAdamW reference code): RMS_t = sqrt(mean(g_t^2 /
max(u_t, eps^2))), u_t the bias-corrected second-moment estimate *after* this step's update (it already
holds (1 - beta2) g_t^2, so one element's ratio is at most bc_t / (1 - beta2): ~sqrt(1000) = 31.6 for the
RMS with beta2 = 0.999). ~1 while exp_avg_sq tracks g^2; far above 1 when the gradients outgrew it - the
update is then up to ~(1 - beta1) / sqrt(1 - beta2) times Adam's usual ~lr, and loss spikes followed 1-8
steps later in the paper. With amsgrad the denominator the optimizer used is max_exp_avg_sq.

Read after `optimizer.step()` from the optimizer's own state (step count, betas, eps of each param group:
Adam, AdamW, NAdam, RAdam, fused and foreach alike), on the same strided sketch as the update ratio for
tensors above SKETCH_ELEMENTS elements (exact below). Nothing here writes to a gradient or to the state;
everything is queued on a DeviceBatch (no host read, no sync: a step count on the device stays there).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from .batch import DeviceBatch
from .sketch import sketch_view

__all__ = ["queue_rms"]


def _pair(g: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The same elements of `g` and `v` (both sketched, or both whole), fp32, and numel / elements."""
    gv, factor = sketch_view(g)
    vv, _ = sketch_view(v)
    if gv.shape != vv.shape:  # one of them is not contiguous: measure both whole
        gv, vv, factor = g, v, 1.0
    return gv.float(), vv.float(), factor


def _host_number(x: object) -> float | None:
    """A Python number or a CPU tensor as a float (no GPU sync); None for a device tensor."""
    if isinstance(x, torch.Tensor):
        return float(x) if x.device.type == "cpu" and x.numel() == 1 else None
    return float(x) if isinstance(x, (int, float)) else None


def _second_moment(group: dict, state: dict, g: torch.Tensor | None) -> torch.Tensor | None:
    if g is None or g.is_sparse or not state:
        return None
    v = state.get("max_exp_avg_sq") if group.get("amsgrad") else None
    v = state.get("exp_avg_sq") if v is None else v
    ok = isinstance(v, torch.Tensor) and v.shape == g.shape and "step" in state
    return v if ok else None


def _ratios(items: list[tuple[torch.Tensor, torch.Tensor, object]], beta2: float, eps: float,
            device_steps: bool | None = None) -> list[torch.Tensor]:
    """g^2 / max(v / (1 - beta2^step), eps^2) for (g, v, step) on one device, as new fp32 tensors.
    Step counts readable without a sync become host scalars; otherwise (capturable / fused on a GPU:
    `device_steps`, decided from the steps when None) the bias correction is computed on the device."""
    gs = [g for g, _, _ in items]
    ratio = torch._foreach_mul(gs, gs)
    steps = [_host_number(t) for _, _, t in items]
    if device_steps is None:
        device_steps = any(t is None for t in steps)
    if not device_steps:
        den = torch._foreach_mul([v for _, v, _ in items], [1.0 / (1.0 - beta2 ** t) for t in steps])  # type: ignore[operator]
    else:
        counts = [t if isinstance(t, torch.Tensor) else torch.tensor(float(t)) for _, _, t in items]  # type: ignore[arg-type]
        bc = torch._foreach_pow(beta2, [t.to(gs[0].device, torch.float32) for t in counts])
        torch._foreach_neg_(bc)
        torch._foreach_add_(bc, 1.0)
        den = torch._foreach_div([v for _, v, _ in items], bc)
    torch._foreach_clamp_min_(den, eps * eps)
    torch._foreach_div_(ratio, den)
    return list(ratio)


def queue_rms(b: DeviceBatch, name: str, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
              grads: Sequence[torch.Tensor | None]) -> list[float]:
    """Queue on `b`, as `name`, per tensor the sum of g^2 / max(v_hat, eps^2) over its measured elements
    (None where there is no Adam second moment). Returns per tensor numel / measured elements (the
    scale of the sum to the whole tensor; 0.0 where nothing was queued). Call after the update, when the
    gradients are unscaled (a fused kernel under GradScaler writes its unscaled gradients back)."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    factors = [0.0] * len(params)
    todo: dict[tuple[int, torch.device], list[tuple[int, torch.Tensor, torch.Tensor, object]]] = defaultdict(list)
    for i, (p, g) in enumerate(zip(params, grads)):
        group = group_of.get(id(p))
        state = optimizer.state.get(p, {}) if group is not None else {}
        v = _second_moment(group or {}, state, g)
        if v is None:
            continue
        gv, vv, factors[i] = _pair(g.detach(), v.detach())  # type: ignore[union-attr]
        todo[(id(group), gv.device)].append((i, gv, vv, state["step"]))
    out: list[torch.Tensor | None] = [None] * len(params)
    for (gid, _), items in todo.items():
        group = next(g for g in optimizer.param_groups if id(g) == gid)
        beta2, eps = _host_number((group.get("betas") or (None, None))[1]), _host_number(group.get("eps"))
        if beta2 is None or eps is None:
            for i, *_ in items:
                factors[i] = 0.0
            continue
        for (i, *_), r in zip(items, _ratios([(g, v, t) for _, g, v, t in items], beta2, eps)):
            out[i] = r
    b.add(name, out, "abs_sum")
    return factors
