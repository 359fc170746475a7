"""Fix builders shared by the rules: code for the user's own set-up, in its latest state, never generic
advice. Each builder returns a `Fix` that follows the snippet contract (`snippets.py`): a "setup" part
run once after the model / optimizer / scaler exist, an "iteration" part that replaces one whole
training iteration, or "loss" helpers; tests execute every snippet a fault's finding offers on the
example trainer (tests/diagnosis/test_fixes_work.py). Fixes that only ease a symptom are marked
`mitigates=True` and their summary starts with "Only mitigates".

Precision fixes (loss scaling, autocast, bfloat16, float32 islands) live in `fixes_precision.py`;
this module re-exports them so rules import one name.
"""

from __future__ import annotations

import dataclasses

from ..findings import Fix
from .fixes_precision import (
    autocast_scaler_fix,
    bf16_fix,
    loss_eps_fix,
    manual_loss_scale_fix,
    module_fp32_fix,
    scaler_fix,
)
from .setup_values import Setup, num, setup_of
from .snippets import join

__all__ = [
    "Setup",
    "amsgrad_fix",
    "autocast_scaler_fix",
    "bf16_fix",
    "clip_fix",
    "eps_fix",
    "fused_fix",
    "loss_eps_fix",
    "lr_fix",
    "manual_loss_scale_fix",
    "master_weights_fix",
    "mitigation",
    "module_fp32_fix",
    "num",
    "scaler_fix",
    "setup_of",
    "supports_fused",
    "warmup_fix",
]

_FUSED_OPTIMS = {"Adam", "AdamW"}  # torch.optim classes with fused=True (SGD/Adagrad too, not Adam-family)


def mitigation(fix: Fix, why: str) -> Fix:
    """`fix` marked as easing the symptom only; `why` (one clause) goes at the front of its summary."""
    return dataclasses.replace(fix, mitigates=True, summary=f"Only mitigates ({why}): {fix.summary}")


def supports_fused(s: Setup) -> bool:
    """fused=True exists for Adam/AdamW on CUDA, and on the CPU from torch 2.4 (checked on 2.13 with
    float16 parameters); unknown torch versions count as recent."""
    if s.optimizer not in _FUSED_OPTIMS:
        return False
    return s.device == "cuda" or s.torch_version == (0, 0) or s.torch_version >= (2, 4)


def master_weights_fix(s: Setup) -> Fix:
    setup = f"""\
params = [p for p in model.parameters() if p.requires_grad]
master = [p.detach().float().requires_grad_() for p in params]  # float32, for the optimizer
optimizer = {s.optimizer_ctor('master')}"""
    iteration = """\
loss = compute_loss(model, batch)
loss.backward()
for p, m in zip(params, master):
    m.grad, p.grad = (None if p.grad is None else p.grad.float()), None
optimizer.step()
with torch.no_grad():
    for p, m in zip(params, master):
        p.copy_(m)  # back into the model's own dtype"""
    return Fix("dtype", f"Let {s.optimizer_name} update float32 master copies of the {s.param_dtype} weights. "
               f"Its state and eps are then float32; the model still computes in {s.param_dtype}."
               + s.in_trellis('"fp16_mode": "inflat_all" in the trainer args does this (with a loss scale)'),
               join(setup, iteration), where="setup+iteration")


def _edit_groups(assignments: str, note: str) -> str:
    return f"for group in optimizer.param_groups:  # {note}\n    {assignments}"


def fused_fix(s: Setup) -> Fix:
    where = "" if s.device == "cuda" else " (CPU fused kernels need torch >= 2.4)"
    return Fix("dtype", f"Only mitigates (the state stays {s.param_dtype}): compute the update in float32 with "
               f"fused=True. No NaN/Inf then{where}, but exp_avg_sq still rounds to 0 between steps for small "
               "gradients and those steps are too large; prefer float32 master weights.",
               _edit_groups('group["fused"], group["foreach"] = True, None',
                            "before the first step; or pass fused=True to the constructor"),
               mitigates=True)


def eps_fix(s: Setup, new_eps: float = 1e-4) -> Fix:
    return Fix("eps", f"Raise eps to {num(new_eps)} (now {num(s.eps)}; {num(new_eps)} is a normal "
               f"{s.param_dtype} number). Trade-off: wherever exp_avg_sq has underflowed, the step becomes "
               "lr * exp_avg / eps (momentum SGD with lr/eps) instead of Adam's normalised ~lr step, so "
               "small-gradient weights train differently; re-tune lr."
               + s.in_trellis(f'"optimizer": {{"args": {{"eps": {num(new_eps)}}}}} in the trainer args'),
               _edit_groups(f'group["eps"] = {num(new_eps)}', f"or pass eps={num(new_eps)} to the constructor"))


def amsgrad_fix(s: Setup) -> Fix:
    eps = max(s.eps, 1e-4)
    return Fix("amsgrad", "Only mitigates (last resort): amsgrad=True, with eps raised too. It keeps the "
               "running maximum of exp_avg_sq, so a denominator that was once non-zero cannot decay back to 0; "
               "it does not help on the first step.",
               _edit_groups(f'group["amsgrad"], group["eps"] = True, {num(eps)}', "before the first step"),
               mitigates=True)


def lr_fix(s: Setup, new_lr: float, current: float | None = None) -> Fix:
    now = s.lr if current is None else current
    setup = f"""\
def cap_lr(optimizer, args, kwargs):  # runs before every optimizer.step(), after any schedule set the lr
    for group in optimizer.param_groups:
        group["lr"] = min(group["lr"], {num(new_lr)})
optimizer.register_step_pre_hook(cap_lr)"""
    return Fix("lr", f"Lower the learning rate to {num(new_lr)} (now {num(now)}). Set it where your config or "
               "schedule sets it; the snippet caps it before every optimizer.step()."
               + s.in_trellis(f'"optimizer": {{"args": {{"lr": {num(new_lr)}}}}} in the trainer args'),
               setup)


def warmup_fix(steps: int = 1000) -> Fix:
    steps = int(steps)
    return Fix("warmup", f"Only mitigates (early steps only): warm the learning rate up over {steps} steps. "
               "Linearly, while Adam's second-moment estimate is still noisy.",
               "scheduler = torch.optim.lr_scheduler.LambdaLR(\n"
               f"    optimizer, lambda step: min(1.0, (step + 1) / {steps}))\n"
               "optimizer.register_step_post_hook(lambda optimizer, args, kwargs: scheduler.step())",
               mitigates=True)


def clip_fix(max_norm: float, scaler: bool = False) -> Fix:
    """Clipping right before every optimizer.step(): after GradScaler's unscale (scaler.step unscales
    first), on whatever tensors the optimizer updates (master copies included)."""
    after = " (after GradScaler's unscale)" if scaler else ""
    limit = num(float(max_norm))
    snippet = f"""\
params = [p for group in optimizer.param_groups for p in group["params"]]
def clip(optimizer, args, kwargs):  # runs right before every optimizer.step()
    torch.nn.utils.clip_grad_norm_(params, max_norm={limit})
optimizer.register_step_pre_hook(clip)"""
    return Fix("clip", f"Only mitigates (the cause of the jump stays): clip the gradient norm at {limit}. That is "
               f"a few times its recent median, applied right before every optimizer.step(){after}.", snippet,
               mitigates=True)
