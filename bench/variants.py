"""What each benchmark variant adds to a training step: the monitor, its peers, and the floor.

A Variant is attached to its own Job (model copy + optimizer) once, then sees every step through
`context()` (around forward and backward), `on_loss()` and `after_backward()` (before the
optimizer step: where hand-written gradient callbacks run). `close()` detaches it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .workloads import Job

__all__ = ["VARIANTS", "Variant", "train_step"]


class Variant:
    """Unwatched: adds nothing (the baseline every ratio is taken to)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def attach(self, job: Job, tmp: Path) -> None:
        self.job = job

    def context(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def on_loss(self, loss: torch.Tensor) -> None:
        pass

    def after_backward(self, job: Job) -> None:
        pass

    def close(self) -> None:
        pass


class Watch(Variant):
    """`monitor.watch()` with its exporter (port=0: a free port) and its SQLite record on."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name)
        self.options = options

    def attach(self, job: Job, tmp: Path) -> None:
        import monitor

        safe = "".join(c if c.isalnum() else "_" for c in self.name)
        self.watcher = monitor.watch(job.model, job.optimizer, scaler=job.scaler, port=0, run=safe,
                                     record=tmp / f"{safe}.db", **self.options)

    def on_loss(self, loss: torch.Tensor) -> None:
        self.watcher.observe_loss(loss)

    def close(self) -> None:
        self.watcher.close()


class WatchNoInputCheck(Watch):
    """`monitor.watch()` with its per-iteration input check removed: the A/B for what that check costs."""

    def attach(self, job: Job, tmp: Path) -> None:
        super().attach(job, tmp)
        self.watcher._inputs.remove()


class WandbWatch(Variant):
    """`wandb.watch(model, log="gradients", log_freq=1)`, offline, with one `wandb.log` per step
    (the hooks' histograms are committed with the step's log call, as in a real loop)."""

    def attach(self, job: Job, tmp: Path) -> None:
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_DIR", str(tmp))
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="slatmon-bench", dir=str(tmp), mode="offline", reinit="finish_previous")
        wandb.watch(job.model, log="gradients", log_freq=1)
        self.step = 0

    def after_backward(self, job: Job) -> None:
        self.step += 1
        self.wandb.log({"step": self.step})

    def close(self) -> None:
        self.wandb.unwatch()
        self.run.finish()


class DetectAnomaly(Variant):
    """`torch.autograd.detect_anomaly()` around forward and backward (nan checks on every op)."""

    def context(self) -> contextlib.AbstractContextManager[object]:
        return torch.autograd.detect_anomaly(check_nan=True)


class NormItemLoop(Variant):
    """A per-parameter `p.grad.norm().item()` loop: hand-written callbacks, Lightning's `grad_norm`."""

    def after_backward(self, job: Job) -> None:
        self.norms = {n: p.grad.norm().item() for n, p in job.model.named_parameters() if p.grad is not None}


class Floor(Variant):
    """The floor: one fused `torch._foreach_norm` over all gradients and one host transfer."""

    def after_backward(self, job: Job) -> None:
        norms = torch._foreach_norm(job.grads(), 2, dtype=torch.float32)
        self.norms = torch.stack(norms).cpu()


# name -> factory. bench/guard.py measures the guard per set-up (undo copy or device-side flag).
VARIANTS: dict[str, Callable[[], Variant]] = {
    "unwatched": lambda: Variant("unwatched"),
    "watch every=1": lambda: Watch("watch every=1", every=1),
    "watch every=10": lambda: Watch("watch every=10", every=10),
    "watch every=1 update_ratio=False": lambda: Watch("watch every=1 update_ratio=False", every=1,
                                                      update_ratio=False),
    "watch every=10 on_nonfinite=skip": lambda: Watch("watch every=10 on_nonfinite=skip", every=10,
                                                      on_nonfinite="skip"),
    "watch every=10 no input check": lambda: WatchNoInputCheck("watch every=10 no input check", every=10),
    "wandb.watch gradients": lambda: WandbWatch("wandb.watch gradients"),
    "detect_anomaly": lambda: DetectAnomaly("detect_anomaly"),
    "per-param norm().item()": lambda: NormItemLoop("per-param norm().item()"),
    "floor: foreach_norm + 1 transfer": lambda: Floor("floor: foreach_norm + 1 transfer"),
}


def train_step(job: Job, variant: Variant) -> None:
    """One training iteration of `job` with `variant`'s additions."""
    job.optimizer.zero_grad(set_to_none=True)
    with variant.context():
        with job.autocast():
            loss = job.loss()
        variant.on_loss(loss)
        (job.scaler.scale(loss) if job.scaler is not None else loss).backward()
    variant.after_backward(job)
    if job.scaler is not None:
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        job.optimizer.step()
