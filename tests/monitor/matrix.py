"""One small training run per cell of the set-up matrix, with its ground truth computed in raw torch.

`run_cell(cell, watch=...)` trains a tiny model for `cell.steps` iterations in one of the precision
modes people train with, with an optimizer implementation torch ships, in one loop shape. The loop
itself records the truth the monitor is checked against - without asking the monitor anything:
the unscaled per-layer and global gradient norms before clipping, the global norm after clipping,
which steps were skipped, each step's loss (the mean over its micro-batches) and the non-finite
gradient elements per layer. The same function runs unwatched (for bitwise identity) and watched.

Faults: `cell.bad_steps` get an input batch with an inf in it; modes with a way to skip (GradScaler,
the hand-made TRELLIS scale, a loop that checks its gradients) skip those steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import monitor

PRECISIONS = ("fp32", "bf16-autocast", "fp16-amp", "fp16-pure", "bf16-pure", "inflat_all", "self-skip")
SKIPPING = ("fp16-amp", "inflat_all", "self-skip")  # modes that skip a non-finite step themselves
OPTIMIZERS = ("sgd", "adam", "adamw")
IMPLS = ("forloop", "foreach", "fused")


@dataclass(frozen=True)
class Cell:
    precision: str = "fp32"
    optimizer: str = "adamw"
    impl: str = "foreach"
    clip: float | None = None  # clip_grad_norm_ max_norm
    micro_batches: int = 1
    container_root: bool = False  # watch nn.ModuleDict({"encoder", "decoder"}): its forward never runs
    compiled: bool = False
    scheduler: bool = False  # a LambdaLR that steps every iteration, skipped ones included
    bad_steps: tuple[int, ...] = ()
    bad_value: float = math.inf  # what the bad batches hold
    nan_grad_layer: tuple[int, str] | None = None  # (step, layer): backward makes one NaN in its weight grad
    eps: float | None = None  # Adam-family eps (default: 1e-8, 1e-4 for pure fp16/bf16)
    steps: int = 8

    @property
    def id(self) -> str:
        extras = [k for k, v in (("clip", self.clip), ("accum", self.micro_batches > 1),
                                 ("dictroot", self.container_root), ("compiled", self.compiled),
                                 ("sched", self.scheduler), ("faults", self.bad_steps)) if v]
        return "-".join([self.precision, self.optimizer, self.impl, *extras])


@dataclass
class Truth:
    skipped: list[int] = field(default_factory=list)
    global_norm: dict[int, float] = field(default_factory=dict)  # unscaled, before clipping
    applied_norm: dict[int, float] = field(default_factory=dict)  # unscaled, what step() received
    layer_norm: dict[int, dict[str, float]] = field(default_factory=dict)
    grad_nonfinite: dict[int, dict[str, int]] = field(default_factory=dict)
    loss: dict[int, float] = field(default_factory=dict)
    final: dict[str, torch.Tensor] = field(default_factory=dict)


class Torso(nn.Module):
    """fp32 input layer -> `dtype` blocks -> fp32 output layer (TRELLIS's convert_to_fp16 shape)."""

    def __init__(self, dtype: torch.dtype, width: int = 16) -> None:
        super().__init__()
        self.input_layer = nn.Linear(8, width)
        self.blocks = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)).to(dtype)
        self.out_layer = nn.Linear(width, 4)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.input_layer(x).to(self.dtype))
        return self.out_layer(h.to(self.out_layer.weight.dtype))


class Decoder(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4).to(dtype)
        self.out_layer = nn.Linear(4, 1)
        self.dtype = dtype

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.block(z.to(self.dtype)).float())


def _dtypes(precision: str) -> tuple[torch.dtype, torch.dtype]:
    """(blocks dtype, dtype of every other layer)."""
    return {"fp16-pure": (torch.float16, torch.float16), "bf16-pure": (torch.bfloat16, torch.bfloat16),
            "inflat_all": (torch.float16, torch.float32)}.get(precision, (torch.float32, torch.float32))


def build_model(cell: Cell) -> tuple[nn.Module, nn.Module]:
    """(the module to watch, the module to call)."""
    torch.manual_seed(0)
    blocks, rest = _dtypes(cell.precision)
    torso = Torso(blocks).to(rest) if rest != torch.float32 else Torso(blocks)
    if cell.container_root:
        decoder = Decoder(blocks).to(rest) if rest != torch.float32 else Decoder(blocks)
        models = nn.ModuleDict({"encoder": torso, "decoder": decoder})
        enc, dec = models["encoder"], models["decoder"]
        call: nn.Module = nn.Sequential(enc, dec)  # the loop's own composition; never hooked itself
        return models, call
    if cell.compiled:
        compiled = torch.compile(torso, backend="aot_eager")
        return compiled, compiled
    return torso, torso


def batch(cell: Cell, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + micro)
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 1 if cell.container_root else 4, generator=g)
    if step in cell.bad_steps:
        x[3, 2] = cell.bad_value
    return x, y


def make_optimizer(cell: Cell, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    impl = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[cell.impl]
    low = cell.precision in ("fp16-pure", "bf16-pure")
    if cell.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9, **impl)
    cls = torch.optim.Adam if cell.optimizer == "adam" else torch.optim.AdamW
    eps = cell.eps if cell.eps is not None else (1e-4 if low else 1e-8)
    return cls(params, lr=1e-3, eps=eps, **impl)


def layer_of(name: str) -> str:
    name = name.removeprefix("_orig_mod.")  # torch.compile's wrapper
    return name.rsplit(".", 1)[0] if "." in name else "<root>"


def _norm_of(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.grad.detach().double().pow(2).sum()) for t in tensors if t.grad is not None))


def _grad_truth(named: list[tuple[str, nn.Parameter]], scale: float) -> tuple[dict[str, float], dict[str, int]]:
    sq: dict[str, float] = {}
    bad: dict[str, int] = {}
    for name, p in named:
        if p.grad is None:
            continue
        layer = layer_of(name)
        g = p.grad.detach().double() / scale
        sq[layer] = sq.get(layer, 0.0) + float(g.pow(2).sum())
        bad[layer] = bad.get(layer, 0) + int((~torch.isfinite(p.grad)).sum())
    return {k: math.sqrt(v) for k, v in sq.items()}, bad


def _global(norms: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in norms.values()))


def _nonfinite_grads(params: list[torch.Tensor]) -> bool:
    return any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params)


def run_cell(cell: Cell, watch: bool, after_step: Callable[[int, monitor.Watcher], None] | None = None,
             **watch_options) -> tuple[Truth, monitor.Watcher | None]:
    """Train `cell` (see the module docstring); `after_step(step, watcher)` runs after each watched
    iteration. Returns the truth and the closed watcher (or None)."""
    watched, call = build_model(cell)
    named = list(watched.named_parameters())
    params = [p for _, p in named]
    truth = Truth()
    master = None
    if cell.precision == "inflat_all":  # TRELLIS: one flat fp32 master parameter, hand-made scale
        master = nn.Parameter(torch.cat([p.detach().float().reshape(-1) for p in params]))
        opt = make_optimizer(cell, [master])
    else:
        opt = make_optimizer(cell, params)
    state = {"log_scale": 12.0}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if cell.precision == "fp16-amp" else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (1 + i)) if cell.scheduler else None
    w = None
    if watch:
        kw = {"scaler": scaler} if scaler is not None else {}
        if master is not None:
            kw = {"loss_scale": lambda: 2.0 ** state["log_scale"]}
        w = monitor.watch(watched, opt, **{"port": None, **kw, **watch_options})
    autocast = {"bf16-autocast": torch.bfloat16, "self-skip": torch.bfloat16,
                "fp16-amp": torch.float16}.get(cell.precision)
    try:
        for step in range(1, cell.steps + 1):
            _iteration(cell, step, call, named, params, opt, scaler, master, state, autocast, truth, w)
            if sched is not None:
                sched.step()
            if after_step is not None and w is not None:
                after_step(step, w)
    finally:
        if w is not None:
            w.close()
    truth.final = {n: p.detach().clone() for n, p in watched.named_parameters()}
    return truth, w


def _iteration(cell, step, call, named, params, opt, scaler, master, state, autocast, truth, w) -> None:
    for p in params:
        p.grad = None
    if master is not None:
        master.grad = None
    scale = 2.0 ** state["log_scale"] if master is not None else (scaler.get_scale() if scaler else 1.0)
    losses = []
    handle = None
    if cell.nan_grad_layer and cell.nan_grad_layer[0] == step:
        handle = dict(named)[cell.nan_grad_layer[1] + ".weight"].register_hook(_one_nan)
    for micro in range(cell.micro_batches):
        x, y = batch(cell, step, micro)
        x = x.to(params[0].dtype) if cell.precision.endswith("pure") else x
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            out = call(x)
            loss = nn.functional.mse_loss(out.float(), y) / cell.micro_batches
        losses.append(float(loss.detach()))
        if w is not None:
            w.observe_loss(loss)
        (scaler.scale(loss) if scaler else loss * scale).backward()
    if handle is not None:
        handle.remove()
    truth.loss[step] = sum(losses) / len(losses)
    norms, bad = _grad_truth(named, scale)
    truth.layer_norm[step], truth.grad_nonfinite[step] = norms, bad
    truth.global_norm[step] = _global(norms)
    skipped = _apply(cell, step, params, opt, scaler, master, state, truth, w)
    if skipped:
        truth.skipped.append(step)


def copy_master_back(master: torch.Tensor, params: list[torch.Tensor]) -> None:
    """TRELLIS inflat_all after the step: the flat fp32 master copied back into the model's tensors."""
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(master[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def _one_nan(grad: torch.Tensor) -> torch.Tensor:
    out = grad.clone()
    out.view(-1)[0] = math.nan
    return out


def _clip(cell: Cell, tensors: list[torch.Tensor]) -> float:
    if cell.clip is None:
        return math.nan
    return float(nn.utils.clip_grad_norm_(tensors, cell.clip))


def _apply(cell, step, params, opt, scaler, master, state, truth, w) -> bool:
    """The optimizer step of the mode; True when the step was skipped."""
    if master is not None:  # TRELLIS inflat_all: copy grads to the master, check, unscale, clip, step
        master.grad = torch.cat([p.grad.detach().float().reshape(-1) for p in params])
        if not torch.isfinite(master.grad).all():
            state["log_scale"] -= 1
            return True
        master.grad.mul_(1.0 / 2 ** state["log_scale"])
        _clip(cell, [master])
        truth.applied_norm[step] = _norm_of([master])
        opt.step()
        copy_master_back(master, params)
        state["log_scale"] += 1e-3
        return False
    if scaler is not None:
        before = scaler.get_scale()
        if cell.clip is not None:
            scaler.unscale_(opt)
            _clip(cell, params)
        scaler.step(opt)
        scaler.update()
        skipped = scaler.get_scale() < before
        if not skipped and cell.clip is not None:
            truth.applied_norm[step] = _norm_of(params)
        return skipped
    if cell.precision == "self-skip" and _nonfinite_grads(params):  # TRELLIS fp16_mode=None: print and skip
        if w is not None:
            w.step_skipped()
        return True
    _clip(cell, params)
    truth.applied_norm[step] = _norm_of(params)
    opt.step()
    return False
