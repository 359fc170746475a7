"""Fix builders shared by the rules: concrete code for the user's own setup (their optimizer class,
lr, eps, betas, dtype and device as recorded in RunInfo), never generic advice.

Each builder returns a `Fix`; rules pick and order them (best first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..findings import Fix
from ..history import History
from .numerics import is_low_precision, normalize_dtype
from .observe import groups, is_num

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
    "module_fp32_fix",
    "num",
    "scaler_fix",
    "setup_of",
    "supports_fused",
    "warmup_fix",
]

_TORCH_OPTIMS = {"Adam", "AdamW", "NAdam", "RAdam", "Adamax", "SparseAdam", "Adagrad", "Adadelta",
                 "ASGD", "LBFGS", "RMSprop", "Rprop", "SGD"}
_FUSED_OPTIMS = {"Adam", "AdamW"}  # torch.optim classes with fused=True (SGD/Adagrad too, not Adam-family)


@dataclass(frozen=True)
class Setup:
    """What the snippets fill in: from RunInfo (first param group), with PyTorch defaults when unknown."""

    optimizer: str = "AdamW"
    lr: float = 1e-3
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    param_dtype: str = "float16"
    device: str = "cuda"
    torch_version: tuple[int, int] = (0, 0)

    @property
    def optimizer_path(self) -> str:
        return f"torch.optim.{self.optimizer}" if self.optimizer in _TORCH_OPTIMS else self.optimizer

    @property
    def torch_dtype(self) -> str:
        return f"torch.{self.param_dtype}"

    def optimizer_ctor(self, params: str = "model.parameters()", **override: object) -> str:
        """`torch.optim.AdamW(model.parameters(), lr=0.0001, eps=1e-08, ...)` with overrides."""
        kw: dict[str, object] = {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                                 "weight_decay": self.weight_decay}
        kw.update(override)
        args = ", ".join(f"{k}={num(v)}" for k, v in kw.items() if v is not None)
        return f"{self.optimizer_path}({params}, {args})"


def num(v: object) -> str:
    """Short, valid Python for a number (1e-08, 0.0001, (0.9, 0.999)); repr otherwise."""
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return f'float("{v}")'
        text = f"{v:g}"
        return text if "e" in text or "." in text else text + ".0"
    if isinstance(v, tuple):
        return "(" + ", ".join(num(x) for x in v) + ")"
    return repr(v)


def _torch_version(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def setup_of(history: History) -> Setup:
    """The user's setup as far as the history knows it."""
    run = history.run
    g = groups(history)[0] if groups(history) else None
    low = [normalize_dtype(i.dtype) for i in run.layers.values() if is_low_precision(getattr(i, "dtype", None))]
    device = run.device.split(":")[0] if isinstance(run.device, str) and run.device else "cuda"
    return Setup(
        optimizer=run.optimizer if isinstance(run.optimizer, str) and run.optimizer.isidentifier() else "AdamW",
        lr=float(g.lr) if g and is_num(g.lr) else 1e-3,
        eps=float(g.eps) if g and is_num(g.eps) else 1e-8,
        betas=tuple(g.betas) if g and isinstance(g.betas, tuple) and len(g.betas) == 2 else (0.9, 0.999),
        weight_decay=float(g.weight_decay) if g and is_num(g.weight_decay) else 0.0,
        param_dtype=(low[0] or "float16") if low else "float16",
        device=device,
        torch_version=_torch_version(run.torch_version),
    )


def supports_fused(s: Setup) -> bool:
    """fused=True exists for Adam/AdamW on CUDA, and on the CPU from torch 2.4 (checked on 2.13 with
    float16 parameters); unknown torch versions count as recent."""
    if s.optimizer not in _FUSED_OPTIMS:
        return False
    return s.device == "cuda" or s.torch_version == (0, 0) or s.torch_version >= (2, 4)


def master_weights_fix(s: Setup) -> Fix:
    ctor = s.optimizer_ctor("master")
    return Fix("dtype", f"Let {s.optimizer} update an fp32 master copy of the {s.param_dtype} weights "
               "(TRELLIS's 'inflat_all'): its state and eps are then fp32, the model still computes in "
               f"{s.param_dtype}.", f"""\
params = [p for p in model.parameters() if p.requires_grad]
master = [p.detach().float().requires_grad_() for p in params]
optimizer = {ctor}
# every step, after loss.backward():
for p, m in zip(params, master):
    m.grad = None if p.grad is None else p.grad.float()
optimizer.step()
optimizer.zero_grad(set_to_none=True)
model.zero_grad(set_to_none=True)
with torch.no_grad():
    for p, m in zip(params, master):
        p.copy_(m)  # back to {s.torch_dtype}""")


def fused_fix(s: Setup) -> Fix:
    where = "" if s.device == "cuda" else " (CPU fused kernels need torch >= 2.4)"
    return Fix("dtype", f"fused=True computes the {s.optimizer} update in fp32 registers{where}: no "
               f"NaN/Inf, but the state stays {s.param_dtype}, so exp_avg_sq still rounds to 0 between "
               "steps for small gradients and those steps are too large; prefer fp32 master weights.",
               f"optimizer = {s.optimizer_ctor(fused=True)}")


def eps_fix(s: Setup, new_eps: float = 1e-4) -> Fix:
    return Fix("eps", f"Raise eps to {num(new_eps)} (a normal {s.param_dtype} number). Trade-off: wherever "
               "exp_avg_sq has underflowed, the step becomes lr * exp_avg / eps (momentum SGD with lr/eps) "
               "instead of Adam's normalised ~lr step, so small-gradient weights train differently; "
               "re-tune lr.", f"optimizer = {s.optimizer_ctor(eps=new_eps)}")


def amsgrad_fix(s: Setup) -> Fix:
    return Fix("amsgrad", "amsgrad=True keeps the running maximum of exp_avg_sq, so a denominator that was "
               "once non-zero cannot decay back to 0; it does not help on the first step - use with a "
               "larger eps, as a last resort.", f"optimizer = {s.optimizer_ctor(eps=max(s.eps, 1e-4), amsgrad=True)}")


def autocast_scaler_fix(s: Setup, dtype: str = "float16") -> Fix:
    return Fix("scaler", "Keep the weights fp32 and run the forward under autocast with a GradScaler "
               "(GradScaler refuses float16 parameters: 'Attempting to unscale FP16 gradients').", f"""\
model.float()
optimizer = {s.optimizer_ctor()}
scaler = torch.amp.GradScaler("{s.device}")
with torch.autocast("{s.device}", dtype=torch.{dtype}):
    loss = compute_loss(model, batch)
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()""")


def manual_loss_scale_fix(s: Setup, log_scale: float = 16.0) -> Fix:
    return Fix("scaler", f"Scale the loss by hand, as TRELLIS's 'inflat_all' does for {s.param_dtype} weights "
               "(dynamic: halve on overflow and skip, grow slowly otherwise), with fp32 master weights.", f"""\
log_scale = {num(log_scale)}  # loss scale 2**log_scale; TRELLIS starts at 20
(loss * 2 ** log_scale).backward()
if all(p.grad is None or torch.isfinite(p.grad).all() for p in params):
    for p, m in zip(params, master):  # master: fp32 copies, see the dtype fix
        m.grad = None if p.grad is None else p.grad.float() / 2 ** log_scale
    optimizer.step()
    with torch.no_grad():
        for p, m in zip(params, master):
            p.copy_(m)
    log_scale += 1e-3
else:
    log_scale -= 1  # overflow: skip this step
model.zero_grad(set_to_none=True)""")


def scaler_fix(s: Setup, params_low_precision: bool) -> Fix:
    """Loss scaling that fits the setup: by hand for float16 weights, GradScaler for fp32 weights."""
    return manual_loss_scale_fix(s) if params_low_precision else autocast_scaler_fix(s)


def bf16_fix(s: Setup) -> Fix:
    return Fix("dtype", "Use bfloat16 instead of float16: same range as fp32 (max 3.4e38 vs 65504), so "
               "neither activations nor gradients overflow or underflow, and no loss scale is needed.",
               f'with torch.autocast("{s.device}", dtype=torch.bfloat16):\n    loss = compute_loss(model, batch)')


def module_fp32_fix(module: str, out_dtype: str = "float16") -> Fix:
    return Fix("dtype", f"Run {module} in float32: its output exceeded float16's range (max 65504).", f"""\
mod = model.get_submodule("{module}")
mod.float()
mod.register_forward_pre_hook(
    lambda m, args: tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                          for a in args))
mod.register_forward_hook(lambda m, args, out: out.to(torch.{out_dtype}))""")


def clip_fix(max_norm: float, scaler: bool) -> Fix:
    unscale = "scaler.unscale_(optimizer)  # clip the true gradients\n" if scaler else ""
    return Fix("clip", f"Clip the global gradient norm at {num(max_norm)} (a few times its recent median).",
               f"{unscale}torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={num(max_norm)})\n"
               + ("scaler.step(optimizer)" if scaler else "optimizer.step()"))


def lr_fix(s: Setup, new_lr: float, current: float | None = None) -> Fix:
    was = f" (now {num(current)})" if current is not None else ""
    return Fix("lr", f"Lower the learning rate to {num(new_lr)}{was}.",
               f"for group in optimizer.param_groups:\n    group[\"lr\"] = {num(new_lr)}\n"
               f"# or: optimizer = {s.optimizer_ctor(lr=new_lr)}")


def warmup_fix(steps: int = 1000) -> Fix:
    return Fix("warmup", f"Warm the learning rate up linearly over the first {steps} steps.",
               "scheduler = torch.optim.lr_scheduler.LambdaLR(\n"
               f"    optimizer, lambda step: min(1.0, (step + 1) / {steps}))\n"
               "# after every optimizer.step():\nscheduler.step()")


def loss_eps_fix(loss_dtype: str = "float32") -> Fix:
    eps = "1e-4" if normalize_dtype(loss_dtype) == "float16" else "1e-6"
    return Fix("loss_eps", f"Guard the loss against log(0), x/0 and exp overflow (eps {eps} for a "
               f"{normalize_dtype(loss_dtype) or loss_dtype} loss).", f"""\
eps = {eps}
term = torch.log(x.clamp_min(eps))        # instead of torch.log(x)
ratio = num / (den + eps)                 # instead of num / den
logvar = logvar.clamp(-30.0, 20.0)        # exp(logvar) in the KL term stays finite""")
