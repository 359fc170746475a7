"""Fix builders of the second-round signatures: updates rounding away in 16-bit weights, Adam's
second-moment lag, loss spikes. Same conventions as fixes.py: concrete code for the user's set-up
(`Setup`), written to the snippet contract (monitor/diagnosis/snippets.py): "setup" snippets that edit the
optimizer in place or hook its step.
"""

from __future__ import annotations

import dataclasses

from ..findings import Fix
from .fixes import Setup, master_weights_fix, num

__all__ = ["beta2_fix", "raise_lr_fix", "rounding_master_fix", "stochastic_rounding_fix", "update_clipping_fix"]


def rounding_master_fix(s: Setup) -> Fix:
    """fp32 master weights, worded for updates that round away."""
    return dataclasses.replace(master_weights_fix(s), summary=(
        f"Let {s.optimizer_name} update float32 master copies of the {s.param_dtype} weights. Steps below half a "
        f"{s.param_dtype} ulp then add up in float32 until they move the {s.param_dtype} copy the model computes "
        "with (TRELLIS's 'inflat_all')."))


def stochastic_rounding_fix(s: Setup) -> Fix:
    """bfloat16 only: torchao's AdamW rounds the fp32 result stochastically into the bf16 weights."""
    ctor = "_AdamW" + s.optimizer_ctor(bf16_stochastic_round=True).removeprefix(s.optimizer_path)
    return Fix("dtype", "Round the updated weights stochastically into bfloat16 (needs the torchao library, "
               "bf16 weights only, torch.compile-capable platform): in expectation every small update "
               "lands, without an fp32 copy.",
               f"# pip install torchao\nfrom torchao.optim import _AdamW\n\noptimizer = {ctor}")


def raise_lr_fix(s: Setup, new_lr: float, reason: str) -> Fix:
    return Fix("lr", f"Raise the learning rate to {num(new_lr)} (now {num(s.lr)}): {reason}. Only if that lr "
               "suits the model otherwise; fp32 master weights keep your lr.",
               f"for group in optimizer.param_groups:\n    group[\"lr\"] = {num(new_lr)}")


def beta2_fix(s: Setup, beta2: float = 0.95) -> Fix:
    return Fix("betas", f"Lower Adam's beta2 from {num(s.betas[1])} to {num(beta2)}. exp_avg_sq then follows the "
               f"squared gradients within ~{round(1 / (1 - beta2))} steps instead of ~{round(1 / (1 - s.betas[1]))}, "
               f"so g^2 / v_hat stays below {round(1 / (1 - beta2))} per element and a sudden gradient increase "
               "cannot multiply the update (lower beta2 makes loss spikes rarer: Wortsman et al. 2023). "
               "The price: a noisier denominator.",
               "for group in optimizer.param_groups:  # before the first step; or pass betas= to the constructor\n"
               f"    group[\"betas\"] = ({num(s.betas[0])}, {num(beta2)})")


def update_clipping_fix(s: Setup) -> Fix:
    """StableAdamW's update clipping (Wortsman et al. 2023) on a stock optimizer: one param group per
    tensor, whose lr is divided by max(1, RMS(g^2 / v_hat)) before each step."""
    return Fix("clip", "Clip the update per tensor as StableAdamW does (AdamW + Adafactor update clipping, "
               "Wortsman et al. 2023). Each tensor's lr is divided by max(1, RMS(g^2 / v_hat)), so a stale "
               "second moment cannot make a step larger than Adam's usual ~lr. One sync per step.", """\
# one param group per tensor, each with its group's settings (before the first step: the state starts anew)
optimizer = type(optimizer)([dict(group, params=[p]) for group in optimizer.param_groups for p in group["params"]])
base_lr = [group["lr"] for group in optimizer.param_groups]
def clip_update(optimizer, args, kwargs):  # runs before every optimizer.step(), after GradScaler's unscale
    with torch.no_grad():
        rms = []
        for group in optimizer.param_groups:
            p = group["params"][0]
            state = optimizer.state.get(p, {})
            if p.grad is None or "exp_avg_sq" not in state:
                rms.append(torch.ones((), device=p.device))
                continue
            g2, beta2 = p.grad.float() ** 2, group["betas"][1]
            v = (beta2 * state["exp_avg_sq"].float() + (1 - beta2) * g2) / (1 - beta2 ** (float(state["step"]) + 1))
            rms.append((g2 / v.clamp_min(group["eps"] ** 2)).mean().sqrt().to(rms[0].device if rms else p.device))
        for group, lr, r in zip(optimizer.param_groups, base_lr, torch.stack(rms).tolist()):
            group["lr"] = lr / max(1.0, r)
optimizer.register_step_pre_hook(clip_update)""")
