"""The training loop behind `python -m monitor.example.train` and its Python API `run(cfg)`.

With `cfg.watch` the run is monitored exactly as a user would do it: `monitor.watch(model,
optimizer, scaler=..., loss_scale=...)`, `observe_loss(loss)` every iteration, `close()` at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import stats
from .config import FAULTS, PRECISIONS, TrainConfig
from .data import SyntheticVoxels
from .distributed import Dist
from .distributed import start as start_dist
from .faults import FAULT_PRECISION, FaultPlan
from .losses import vae_loss
from .model import SlatVAE
from .precision import Precision, make_precision
from .stats import StepRecord

__all__ = ["RunResult", "resolve_device", "resolve_eps", "resolve_precision", "run"]


@dataclass
class RunResult:
    """What a run produced. `findings` is set for watched runs: the diagnosis of the run record when
    one was written, else `Watcher.findings()` taken just before `close()`."""

    config: TrainConfig
    precision: str
    eps: float
    device: str
    steps: list[StepRecord]
    model: SlatVAE
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    seconds: float
    findings: list[Any] | None = None
    url: str | None = None
    rank: int = 0
    world_size: int = 1
    record_path: str | None = None  # this rank's run record (one file per rank under torchrun)

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    @property
    def record(self) -> str | None:
        return self.record_path


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when available, else the CPU. ValueError for CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def resolve_precision(cfg: TrainConfig) -> str:
    """`auto` -> the mode the fault is meant for (faults.FAULT_PRECISION)."""
    if cfg.fault not in FAULTS:
        raise ValueError(f"unknown fault {cfg.fault!r}; choose one of {', '.join(FAULTS)}")
    precision = FAULT_PRECISION[cfg.fault] if cfg.precision == "auto" else cfg.precision
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {cfg.precision!r}; choose auto or one of {', '.join(PRECISIONS)}")
    return precision


def resolve_eps(cfg: TrainConfig, precision: str) -> float:
    """AdamW eps: `cfg.eps` when given; 1e-8 (PyTorch's default, TRELLIS's) for `eps-underflow` and for
    modes whose optimizer state is fp32; 1e-4 for `fp16-naive` otherwise, since its state is fp16 and
    fp16 holds 1e-4 but rounds 1e-8 to zero."""
    if cfg.eps is not None:
        return cfg.eps
    if cfg.fault == "eps-underflow" or precision != "fp16-naive":
        return 1e-8
    return 1e-4


def _validate(cfg: TrainConfig) -> None:
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.clip is not None and cfg.clip <= 0:
        raise ValueError(f"clip must be > 0, got {cfg.clip}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1, got {cfg.threads}")
    if cfg.watch_every < 1:
        raise ValueError(f"watch_every must be >= 1, got {cfg.watch_every}")
    if cfg.fault_rank is not None and cfg.fault_rank < 0:
        raise ValueError(f"fault_rank must be >= 0 (a rank of the job) or None (every rank), got {cfg.fault_rank}")


def _check_record(cfg: TrainConfig, dist: Dist) -> str | None:
    """This rank's record path (monitor.watch's per-rank naming); refuses one that exists already."""
    if not (cfg.watch and cfg.record):
        return None
    from monitor.distributed import DistInfo, record_path

    path = record_path(cfg.record, DistInfo(rank=dist.rank, world_size=dist.world_size))
    if path is not None and os.path.exists(path):
        raise ValueError(
            f"run record {path} already exists; a second run would mix its steps into it: "
            "pass a new path or delete the old record"
        )
    return path


def _start_watch(cfg: TrainConfig, model: SlatVAE, prec: Precision, precision: str, own_step: bool) -> Any:
    """monitor.watch as a user would call it; `own_step`: a fix's snippet runs the iteration, so the
    precision mode's hand-made loss scale is not in use."""
    import monitor

    name = cfg.run or f"{cfg.config}-{precision}-{cfg.fault}"  # the same on every rank: one run label
    port = {} if cfg.port == "auto" else {"port": cfg.port}
    return monitor.watch(
        model,
        prec.optimizer,
        scaler=prec.scaler,
        loss_scale=None if own_step else prec.loss_scale_fn(),
        every=cfg.watch_every,
        run=name,
        record=cfg.record,
        **port,
    )


def _start_fix(cfg: TrainConfig, model: SlatVAE, prec: Precision, dist: Dist) -> tuple[Any, Any]:
    """cfg.fix applied as written (apply_fix.py): (FixRunner, GradTap or None), or (None, None)."""
    if cfg.fix is None:
        return None, None
    if dist.world_size > 1:
        raise ValueError("a fix (TrainConfig.fix) is applied in single-process runs only, not under torchrun")
    if cfg.fault == "grad-corrupt":
        raise ValueError("grad-corrupt injects between backward and optimizer.step(), which a fix's snippet owns")
    from .apply_fix import start_fix

    return start_fix(cfg.fix, model, prec)


def _corrupt_grads(model: SlatVAE, factor: float) -> None:
    """The grad-corrupt fault: what a flipped bit or a faulty GPU does to already all-reduced gradients."""
    if factor != 1.0:
        for p in model.decoder.out_layer.parameters():
            if p.grad is not None:
                p.grad.mul_(factor)


@dataclass(frozen=True)
class _Job:
    """What every step needs besides the step number."""

    cfg: TrainConfig
    model: SlatVAE
    net: torch.nn.Module  # the module called for the forward: `model`, or DDP(model) under torchrun
    prec: Precision
    data: SyntheticVoxels
    plan: FaultPlan
    dist: Dist
    watcher: Any
    fix: Any = None  # apply_fix.FixRunner when cfg.fix is set
    tap: Any = None  # apply_fix.GradTap when that fix replaces the iteration


def _train_step(step: int, job: _Job) -> StepRecord:
    if job.tap is not None:
        from .apply_fix import fixed_step

        return fixed_step(step, job)
    cfg, model, prec, plan, watcher = job.cfg, job.model, job.prec, job.plan, job.watcher
    batch = job.data.batch(job.dist.batch_index(step))
    model.attention_cores()[0].logit_gain = plan.logit_gain(step)
    lr = cfg.lr * plan.lr_factor(step)
    prec.set_lr(lr)
    scale = prec.loss_scale()
    prec.zero_grad()
    with prec.autocast():
        out = job.net(batch.x)
        terms = vae_loss(out, batch, empty_target=plan.empty_target(step),
                         ops=job.fix.loss_ops if job.fix is not None else None)
    loss = terms.total * plan.loss_factor(step)
    if watcher is not None:
        watcher.observe_loss(loss)
    prec.backward(loss)
    _corrupt_grads(model, plan.grad_factor(step))
    track = cfg.track_stats
    grads_ok = stats.grads_finite(model) if track else None
    zero_ratio = stats.fp16_zero_grad_ratio(model) if track else None
    before = stats.snapshot(model) if track and cfg.track_update_ratio else None
    skipped = prec.apply()
    return StepRecord(
        step=step,
        loss=float(loss.detach()),
        output_finite=bool(torch.isfinite(out.pred.feats).all()),
        grads_finite=grads_ok,
        skipped=skipped,
        loss_scale=scale,
        lr=lr,
        fp16_zero_grad_ratio=zero_ratio,
        nonfinite_params=stats.nonfinite_params(model) if track else (),
        update_ratio=stats.update_ratio(model, before) if before is not None else None,
        voxels=int(batch.x.coords.shape[0]),
    )


def run(cfg: TrainConfig, on_step: Callable[[StepRecord], None] | None = None) -> RunResult:
    """Train for `cfg.steps` steps and return what happened. `on_step` is called after every step.

    Deterministic for a given `cfg.seed` on one machine. Raises ValueError for bad settings, and
    whatever `monitor.watch` raises for a bad watch setting (e.g. a port in use). Sets torch's CPU
    thread count for the run (`cfg.threads`) and restores it afterwards. Under torchrun (WORLD_SIZE > 1)
    the run is DDP (trainer_example.distributed): this process is one rank, the result is its own.
    """
    _validate(cfg)
    device = resolve_device(cfg.device)
    threads = cfg.threads if cfg.threads is not None else (1 if device.type == "cpu" else None)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    dist = start_dist(device)
    try:
        return _run(cfg, dist.device(device), dist, on_step)
    finally:
        dist.close()
        torch.set_num_threads(previous)


def _run(cfg: TrainConfig, device: torch.device, dist: Dist, on_step: Callable[[StepRecord], None] | None) -> RunResult:
    precision = resolve_precision(cfg)
    eps = resolve_eps(cfg, precision)
    plan = FaultPlan(cfg.fault, cfg.fault_step).on_rank(dist.rank, cfg.fault_rank)
    record = _check_record(cfg, dist)
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config()
    model = SlatVAE(mcfg, native=device.type != "cuda").to(device)
    data = SyntheticVoxels(mcfg, cfg.seed, device)
    prec = make_precision(precision, model, cfg.lr, eps, cfg.amsgrad, cfg.clip, device)
    fix, tap = _start_fix(cfg, model, prec, dist)
    watcher = _start_watch(cfg, model, prec, precision, tap is not None) if cfg.watch else None
    job = _Job(cfg, model, dist.wrap(model, device), prec, data, plan, dist, watcher, fix, tap)
    records: list[StepRecord] = []
    findings = None
    start = time.perf_counter()
    try:
        for step in range(1, cfg.steps + 1):
            records.append(_train_step(step, job))
            if on_step is not None:
                on_step(records[-1])
        seconds = time.perf_counter() - start
        url = getattr(watcher, "url", None)
        if watcher is not None:
            findings = watcher.findings()
    finally:
        if watcher is not None:
            watcher.close()
        if tap is not None:
            tap.close()
    if watcher is not None and record:
        import monitor

        findings = monitor.diagnose(record)
    return RunResult(cfg, precision, eps, str(device), records, model, prec.optimizer, prec.scaler, seconds,
                     findings, url, dist.rank, dist.world_size, record)
