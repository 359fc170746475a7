"""What fix snippets fill in: the user's set-up in its latest known state, validated for use in code.

Numbers come from the last observed step (lr, eps, loss scale) and the last described param group
(betas, weight decay), never only from attach time. Strings are reduced to fixed sets (device type,
dtype, torch.optim class names): nothing a record says is written into code as raw text
(`snippets.py`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..history import History
from .numerics import is_low_precision, normalize_dtype
from .observe import groups, is_num, sorted_steps
from .snippets import device_name, dtype_name

__all__ = ["ADAM_LIKE", "TORCH_OPTIMS", "Setup", "num", "setup_of"]

TORCH_OPTIMS = frozenset({"Adam", "AdamW", "NAdam", "RAdam", "Adamax", "SparseAdam", "Adagrad", "Adadelta",
                          "ASGD", "LBFGS", "RMSprop", "Rprop", "SGD"})
ADAM_LIKE = frozenset({"Adam", "AdamW", "NAdam", "RAdam", "Adamax"})  # take betas and eps


@dataclass(frozen=True)
class Setup:
    """The values snippets use. `optimizer` is a torch.optim class name or "" (another class: snippets
    then write `type(optimizer)`); `trellis` is TRELLIS's fp16_mode ("inflat_all", "amp", "none") when the
    set-up is TRELLIS's (watch_trellis, or fp16 weights + fp32 master + a hand-made loss scale), else ""."""

    optimizer: str = "AdamW"
    lr: float = 1e-3
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    param_dtype: str = "float16"
    device: str = "cuda"
    torch_version: tuple[int, int] = (0, 0)
    loss_scale: float | None = None
    loss: float | None = None  # the latest finite, non-zero loss
    master_weights: bool = False
    trellis: str = ""

    def __post_init__(self) -> None:
        """Whatever it was built from, every field holds a value from its fixed set or a finite number:
        the builders write fields into code and must never write raw text."""
        defaults = Setup.__dataclass_fields__
        for name in ("lr", "eps", "weight_decay"):
            if not is_num(getattr(self, name)):
                object.__setattr__(self, name, defaults[name].default)
        for name in ("loss_scale", "loss"):
            if getattr(self, name) is not None and not is_num(getattr(self, name)):
                object.__setattr__(self, name, None)
        betas = self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(is_num(b) for b in betas)):
            object.__setattr__(self, "betas", (0.9, 0.999))
        object.__setattr__(self, "optimizer", self.optimizer if self.optimizer in TORCH_OPTIMS else "")
        object.__setattr__(self, "device", device_name(self.device))
        object.__setattr__(self, "param_dtype", dtype_name(self.param_dtype))
        object.__setattr__(self, "trellis", self.trellis if self.trellis in ("", "inflat_all", "amp", "none") else "")

    def start_log_scale(self, usual: float = 20.0) -> float:
        """Where a dynamic loss scale should start: 2**`usual` for a loss of ~1 (TRELLIS: 20, GradScaler:
        16), 2**k higher for a loss 2**k smaller (its gradients are that much smaller too), within
        2**8 .. 2**60; it halves on every overflow, so starting high costs a few skipped steps."""
        if self.loss is None:
            return usual
        return float(min(60, max(8, round(usual - math.log2(abs(self.loss))))))

    @property
    def optimizer_name(self) -> str:
        """For prose: the class name, or "the optimizer"."""
        return self.optimizer or "the optimizer"

    def in_trellis(self, text: str) -> str:
        """" In TRELLIS: <text>." for a TRELLIS set-up, else "" (fix summaries in TRELLIS's config terms)."""
        return f" In TRELLIS: {text}." if self.trellis else ""

    @property
    def optimizer_path(self) -> str:
        """Code naming the optimizer class: `torch.optim.AdamW`, or `type(optimizer)` for any other class."""
        return f"torch.optim.{self.optimizer}" if self.optimizer in TORCH_OPTIMS else "type(optimizer)"

    @property
    def torch_dtype(self) -> str:
        return f"torch.{dtype_name(self.param_dtype)}"

    def optimizer_ctor(self, params: str = "model.parameters()", **override: object) -> str:
        """`torch.optim.AdamW(model.parameters(), lr=0.0001, betas=..., eps=1e-08, weight_decay=0.0)`:
        the arguments the class takes (betas / eps for the Adam family; lr alone for another class),
        latest values, then `override`. `params` is code the caller writes, never record text."""
        kw: dict[str, object] = {"lr": self.lr}
        if self.optimizer in ADAM_LIKE:
            kw.update(betas=self.betas, eps=self.eps)
        if self.optimizer:
            kw["weight_decay"] = self.weight_decay
        kw.update(override)
        args = ", ".join(f"{k}={num(v)}" for k, v in kw.items() if v is not None)
        return f"{self.optimizer_path}({params}, {args})"


def num(v: object) -> str:
    """Short, valid Python for a number (1e-08, 0.0001, (0.9, 0.999), True); "None" for anything else."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return f'float("{v}")'
        text = f"{v:g}"
        return text if "e" in text or "." in text or "n" in text else text + ".0"
    if isinstance(v, tuple):
        return "(" + ", ".join(num(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return "None"  # never raw text: a number field holding something else is not written into code


def _torch_version(text: object) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text) if isinstance(text, str) else None
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _latest(history: History, attr: str) -> float | None:
    """The first param group's value of StepObs.`attr` (lr / eps) at the last step that recorded one."""
    for s in reversed(sorted_steps(history)):
        values = getattr(s, attr, ())
        if isinstance(values, tuple) and values and is_num(values[0]) and math.isfinite(values[0]):
            return float(values[0])
    return None


def _latest_scale(history: History) -> float | None:
    for s in reversed(sorted_steps(history)):
        if is_num(s.loss_scale) and math.isfinite(s.loss_scale) and s.loss_scale > 0:
            return float(s.loss_scale)
    return None


def _latest_loss(history: History) -> float | None:
    for s in reversed(sorted_steps(history)):
        if is_num(s.loss) and s.loss != 0:
            return float(s.loss)
    return None


def _trellis(history: History, low: bool) -> str:
    run = history.run
    mode = {"custom": "inflat_all", "grad_scaler": "amp"}.get(run.scaler, "none")
    if getattr(run, "trainer", "") == "trellis":
        return mode
    return "inflat_all" if run.master_weights is True and run.scaler == "custom" and low else ""


def setup_of(history: History) -> Setup:
    """The user's set-up as far as the history knows it, latest values first."""
    run = history.run
    g = groups(history)[0] if groups(history) else None
    low = [normalize_dtype(i.dtype) for i in run.layers.values() if is_low_precision(getattr(i, "dtype", None))]
    betas = g.betas if g and isinstance(g.betas, tuple) and len(g.betas) == 2 and all(map(is_num, g.betas)) else None
    lr = _latest(history, "lr")
    eps = _latest(history, "eps")
    name = run.optimizer if isinstance(run.optimizer, str) else ""
    return Setup(
        optimizer=name if name in TORCH_OPTIMS else "",
        lr=lr if lr is not None else (float(g.lr) if g and is_num(g.lr) else 1e-3),
        eps=eps if eps is not None else (float(g.eps) if g and is_num(g.eps) else 1e-8),
        betas=(float(betas[0]), float(betas[1])) if betas else (0.9, 0.999),
        weight_decay=float(g.weight_decay) if g and is_num(g.weight_decay) else 0.0,
        param_dtype=dtype_name(low[0]) if low else "float16",
        device=device_name(run.device),
        torch_version=_torch_version(run.torch_version),
        loss_scale=_latest_scale(history),
        loss=_latest_loss(history),
        master_weights=run.master_weights is True,
        trellis=_trellis(history, bool(low)),
    )
