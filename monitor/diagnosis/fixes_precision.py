"""Precision fixes: loss scaling by hand or with GradScaler, bfloat16 autocast, a float32 island around
one module, and guarded loss helpers. Snippets follow the contract in `snippets.py`; module paths enter
the code only as `repr` literals, devices and dtypes only from fixed sets.
"""

from __future__ import annotations

from ..findings import Fix
from .setup_values import Setup, num
from .snippets import device_name, dtype_name, join

__all__ = ["autocast_scaler_fix", "bf16_fix", "loss_eps_fix", "manual_loss_scale_fix", "module_fp32_fix",
           "scaler_fix"]


def _fp32_model(s: Setup) -> str:
    """Setup lines that make the weights float32 and give the optimizer those very tensors."""
    lines = "model.float()  # float32 weights; autocast computes in low precision from them"
    if s.master_weights:  # the optimizer held separate master copies: it must update the model itself now
        lines += f"\noptimizer = {s.optimizer_ctor()}"
    return lines


def _plain_step(backward: str = "loss.backward()") -> str:
    return f"{backward}\noptimizer.step()\noptimizer.zero_grad(set_to_none=True)"


def autocast_scaler_fix(s: Setup, dtype: str = "float16", log_scale: float | None = None) -> Fix:
    """`log_scale`: start the GradScaler at 2**log_scale; None: from the run's latest loss
    (Setup.start_log_scale(16)), or GradScaler's default 2**16 when no loss was seen."""
    device, dtype = device_name(s.device), dtype_name(dtype)
    if log_scale is None and s.loss is not None:
        log_scale = s.start_log_scale(16.0)
    start = "" if log_scale is None else f", init_scale=2.0**{num(float(log_scale))}"
    setup = f"{_fp32_model(s)}\nscaler = torch.amp.GradScaler({device!r}{start})"
    iteration = f"""\
with torch.autocast({device!r}, dtype=torch.{dtype}):
    loss = compute_loss(model, batch)
scaler.scale(loss).backward()
scaler.step(optimizer)  # skips the step when the scaled gradients overflowed
scaler.update()
optimizer.zero_grad(set_to_none=True)"""
    return Fix("scaler", "Keep the weights float32 and run the forward under autocast with a GradScaler. "
               "(GradScaler refuses float16 parameters: 'Attempting to unscale FP16 gradients'.)"
               + s.in_trellis('"fp16_mode": "amp" in the trainer args with the models\' "use_fp16": false'),
               join(setup, iteration), where="setup+iteration")


def manual_loss_scale_fix(s: Setup, log_scale: float | None = None) -> Fix:
    """`log_scale`: start at 2**log_scale; None: from the run's latest loss (Setup.start_log_scale(20),
    TRELLIS's 2**20 for a loss of ~1)."""
    log_scale = s.start_log_scale(20.0) if log_scale is None else log_scale
    setup = f"""\
params = [p for p in model.parameters() if p.requires_grad]
master = [p.detach().float().requires_grad_() for p in params]  # float32, for the optimizer
optimizer = {s.optimizer_ctor('master')}
log_scale = {num(float(log_scale))}  # loss scale 2**log_scale"""
    iteration = """\
loss = compute_loss(model, batch)
(loss * 2**log_scale).backward()
if all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
    for p, m in zip(params, master):
        m.grad = None if p.grad is None else p.grad.float() / 2**log_scale
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, m in zip(params, master):
            p.copy_(m)
    log_scale += 0.001  # grows back 2x every 1000 clean steps
else:
    log_scale -= 1  # overflow: skip this step, halve the scale
model.zero_grad(set_to_none=True)"""
    return Fix("scaler", f"Scale the loss by hand, with float32 master weights for the {s.param_dtype} ones. "
               f"The scale starts at 2**{num(float(log_scale))}, halves and skips the step on overflow, and "
               "grows slowly otherwise."
               + s.in_trellis('"fp16_mode": "inflat_all" in the trainer args (log_scale starts at 20; '
                          '"fp16_scale_growth": 0.001 per clean step)'),
               join(setup, iteration), where="setup+iteration")


def scaler_fix(s: Setup, params_low_precision: bool, log_scale: float | None = None) -> Fix:
    """Loss scaling that fits the setup: by hand for float16 weights, GradScaler for float32 weights;
    starting at 2**log_scale (None: from the run's latest loss)."""
    if params_low_precision:
        return manual_loss_scale_fix(s, log_scale)
    return autocast_scaler_fix(s, log_scale=log_scale)


def bf16_fix(s: Setup) -> Fix:
    device = device_name(s.device)
    iteration = f"with torch.autocast({device!r}, dtype=torch.bfloat16):\n    loss = compute_loss(model, batch)\n"
    return Fix("dtype", "Use bfloat16 autocast on float32 weights instead of float16. bfloat16 has float32's "
               "range (max 3.4e38 vs 65504), so activations and gradients neither overflow nor underflow, and "
               "no loss scale is needed."
               + s.in_trellis('the models\' "use_fp16": false, with the forward under this autocast'),
               join(_fp32_model(s), iteration + _plain_step()), where="setup+iteration")


def module_fp32_fix(module: str, out_dtype: str = "float16") -> Fix:
    """A float32 island around `module` (a path from the record: written as a repr literal). `out_dtype`
    is kept for callers; the island casts back to whatever dtype its input had."""
    path = repr(str(module))
    snippet = f"""\
island = model.get_submodule({path})
island.float()  # its own parameters, if any, in float32
forward_low = island.forward
def forward_fp32(*args, **kwargs):  # float32 inside, autocast off
    first = next((a for a in [*args, *kwargs.values()] if torch.is_tensor(a) and a.is_floating_point()), None)
    if first is None:
        return forward_low(*args, **kwargs)
    def up(a):
        return a.float() if torch.is_tensor(a) and a.is_floating_point() else a
    with torch.autocast(first.device.type, enabled=False):
        out = forward_low(*[up(a) for a in args], **{{k: up(v) for k, v in kwargs.items()}})
    if torch.is_autocast_enabled(first.device.type) or not torch.is_tensor(out):
        return out  # under autocast the next op casts for itself: the output stays float32
    return out.to(first.dtype)  # without autocast the next layer expects the input's dtype
island.forward = forward_fp32"""
    return Fix("dtype", f"Run {path} in float32 (its float16 output passed 65504). Autocast is off inside it and, "
               "under autocast, its output stays float32 for the next op; without autocast it is cast back to "
               "its input's dtype (if that overflows too, run the parent module in float32 instead).", snippet)


def loss_eps_fix(loss_dtype: str = "float32") -> Fix:
    dtype = dtype_name(loss_dtype, "float32")
    eps, exp_max = ("1e-4", "11.0") if dtype == "float16" else ("1e-6", "80.0")
    snippet = f"""\
eps = {eps}  # for a {dtype} loss
def safe_log(x):  # instead of torch.log(x): log(0) = -inf and 0 * log(0) = NaN
    return torch.log(x.clamp_min(eps))
def safe_div(num, den):  # instead of num / den, for a denominator >= 0 (counts, norms, probabilities)
    return num / den.clamp_min(eps)
def safe_exp(x):  # instead of torch.exp(x), e.g. exp(logvar) in a KL term: exp({exp_max}) still fits {dtype}
    return torch.exp(x.clamp_max({exp_max}))"""
    return Fix("loss_eps", "Guard the loss: call safe_log / safe_div / safe_exp in its terms instead of "
               f"torch.log, / and torch.exp. log(0), x/0 and exp overflow then stay finite (eps {eps} for a "
               f"{dtype} loss).", snippet, where="loss")
