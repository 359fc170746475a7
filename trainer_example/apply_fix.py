"""Apply a monitor `Fix` to a run exactly as its snippet is written (the snippet contract,
docs/diagnosis.md): the snippet text is executed, nothing is re-implemented.

- "setup": executed once after the precision mode built the model / optimizer / scaler, before the
  first step (and before `monitor.watch`); the trainer then uses the `optimizer` / `scaler` it left.
- "iteration": executed every step instead of the trainer's own forward / backward / update, with
  `batch` and `compute_loss(model, batch)` (the trainer's forward and loss, faults included).
- "loss": its `safe_log` / `safe_div` / `safe_exp` replace torch.log, division and torch.exp in the loss.

`TrainConfig(fix=...)` uses it; `run()` refuses a fix under torchrun (one process only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monitor.diagnosis.snippets import sections
from monitor.findings import Fix

from . import stats
from .losses import LossOps, vae_loss
from .stats import StepRecord

__all__ = ["FixRunner", "GradTap", "fixed_step", "start_fix"]

_LOSS_NAMES = {"log": "safe_log", "div": "safe_div", "exp": "safe_exp"}


class FixRunner:
    """One fix, its namespace (`torch`, `model`, `optimizer`, `scaler` and what the snippet defines) and
    its sections. Executes the setup part on construction."""

    def __init__(self, fix: Fix, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any) -> None:
        parts = sections(fix)
        self.fix = fix
        self.namespace: dict[str, Any] = {"torch": torch, "model": model, "optimizer": optimizer, "scaler": scaler}
        self._iteration = compile(parts.iteration, "<fix: iteration>", "exec") if parts.iteration.strip() else None
        for name, code in (("setup", parts.setup), ("loss", parts.loss)):
            if code.strip():
                exec(compile(code, f"<fix: {name}>", "exec"), self.namespace)  # noqa: S102 - the point of the class
        self.loss_ops = self._loss_ops() if parts.loss.strip() else None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.namespace["optimizer"]

    @property
    def scaler(self) -> Any:
        return self.namespace["scaler"]

    @property
    def replaces_iteration(self) -> bool:
        return self._iteration is not None

    def _loss_ops(self) -> LossOps:
        found = {field: self.namespace[name] for field, name in _LOSS_NAMES.items()
                 if callable(self.namespace.get(name))}
        if not found:
            raise ValueError(f"the loss fix defines none of {sorted(_LOSS_NAMES.values())}")
        return LossOps(**found)

    def iteration(self, batch: Any, compute_loss: Callable[[nn.Module, Any], torch.Tensor]) -> None:
        """Run the snippet's iteration with this step's `batch` and `compute_loss`."""
        self.namespace.update(batch=batch, compute_loss=compute_loss)
        exec(self._iteration, self.namespace)  # noqa: S102


def start_fix(fix: Fix, model: nn.Module, prec: Any) -> tuple[FixRunner, GradTap | None]:
    """Run `fix`'s setup against the precision mode's objects and hand the trainer what it left:
    `prec.optimizer` / `prec.scaler` become the snippet's. A GradTap when the fix replaces the iteration."""
    low = [p for p in model.parameters() if p.dtype == torch.float16]  # before the setup converts anything
    runner = FixRunner(fix, model, prec.optimizer, prec.scaler)
    prec.optimizer, prec.scaler = runner.optimizer, runner.scaler
    tap = GradTap(list(model.parameters()), low) if runner.replaces_iteration else None
    return runner, tap


class GradTap:
    """The gradients each parameter received in an iteration, read as they are accumulated (a fix's
    iteration may clear `.grad` before it returns): finiteness and the share of exactly-zero elements
    over `params` (the parameters that were float16 when the run began). Remove with `close()`."""

    def __init__(self, params: list[nn.Parameter], low: list[nn.Parameter]) -> None:
        self._low = {id(p): p.numel() for p in low}
        self._low_numel = sum(self._low.values())
        self._zeros: list[torch.Tensor] = []
        self._bad: list[torch.Tensor] = []
        self._received = 0  # elements of float16-at-start params that got a gradient
        self._handles = [p.register_post_accumulate_grad_hook(self._hook) for p in params]

    def _hook(self, p: torch.Tensor) -> None:
        if p.grad is None:
            return
        self._bad.append((~torch.isfinite(p.grad)).any())
        if id(p) in self._low:
            self._received += self._low[id(p)]
            self._zeros.append((p.grad == 0).sum())

    def take(self) -> tuple[bool | None, float | None]:
        """(every gradient finite, zero share over the float16-at-start params; a param without a
        gradient counts as all zero, as in stats.py) since the last take. One device sync."""
        finite = None if not self._bad else not bool(torch.stack(self._bad).any())
        share = None
        if self._low_numel:
            zeros = int(torch.stack(self._zeros).sum()) if self._zeros else 0
            share = (zeros + self._low_numel - self._received) / self._low_numel
        self._zeros, self._bad, self._received = [], [], 0
        return finite, share

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def fixed_step(step: int, job: Any) -> StepRecord:
    """One iteration run by the fix's snippet (`job`: loop._Job with `fix` and `tap`): the same batch and
    faults as `loop._train_step`, the same StepRecord fields, measured around the snippet (gradients by
    the GradTap, the update from parameter snapshots; a step that changed no parameter counts as skipped)."""
    cfg, model, plan, prec, runner = job.cfg, job.model, job.plan, job.prec, job.fix
    batch = job.data.batch(job.dist.batch_index(step))
    model.attention_cores()[0].logit_gain = plan.logit_gain(step)
    lr = cfg.lr * plan.lr_factor(step)
    prec.set_lr(lr)  # the run's own schedule (the lr-spike fault), as the trainer's step does
    seen: dict[str, torch.Tensor] = {}

    def compute_loss(net: nn.Module, b: Any) -> torch.Tensor:
        out = net(b.x)
        terms = vae_loss(out, b, empty_target=plan.empty_target(step), ops=runner.loss_ops)
        loss = terms.total * plan.loss_factor(step)
        seen["loss"], seen["out"] = loss.detach(), out.pred.feats.detach()
        return loss

    track = cfg.track_stats
    before = stats.snapshot(model) if track and cfg.track_update_ratio else None
    prec.zero_grad()
    runner.iteration(batch, compute_loss)
    finite, zero_ratio = job.tap.take()
    ratio = stats.update_ratio(model, before) if before is not None else None
    if "loss" not in seen:
        raise ValueError("the fix's iteration never called compute_loss(model, batch)")
    return StepRecord(
        step=step, loss=float(seen["loss"]), output_finite=bool(torch.isfinite(seen["out"]).all()),
        grads_finite=finite, skipped=ratio == 0.0, loss_scale=None, lr=lr, fp16_zero_grad_ratio=zero_ratio,
        nonfinite_params=stats.nonfinite_params(model) if track else (), update_ratio=ratio,
        voxels=int(batch.x.coords.shape[0]),
    )
