"""`StepBook`: a Watcher's step numbers, the iteration under way (its losses and lr), and skipped steps.

`step` counts optimizer iterations as the watcher saw them, skipped ones included (1 = first). A skip
is seen by the GradScaler tap (`on_scaler_update`), a fall of a hand-made loss scale
(`check_scale_drop`), a fused optimizer's `found_inf` (without a tap), the user (`Watcher.step_skipped`) or the guard
(`guard_skipped`); each becomes a StepObs of its own with its loss (one sync: skips are rare), lr and
reason. Runs in the training thread, inside the watcher's guarded hooks.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .scale_reads import ScaleReads

__all__ = ["StepBook", "mean_loss"]

# The Watcher this book keeps (typed Any: the watcher imports this module, and the package keeps its
# imports acyclic, type-only ones included). It provides optimizer, counters, tracker, _inputs, _output,
# _sampler and _samples; read at each call, since the sampler is rebuilt when parameters change.
Watcher = Any


def _lrs(optimizer: torch.optim.Optimizer) -> tuple[float, ...]:
    """Learning rate per param group, without a GPU sync (a CUDA tensor lr reads as NaN)."""
    out = []
    for g in optimizer.param_groups:
        lr = g.get("lr", 0.0)
        out.append(float(lr) if not isinstance(lr, torch.Tensor) or lr.device.type == "cpu" else float("nan"))
    return tuple(out)


def mean_loss(losses: list[torch.Tensor]) -> torch.Tensor | None:
    """The mean of an iteration's observed losses, on the device (no sync); NaN if any is NaN."""
    if not losses:
        return None
    if len(losses) == 1:
        return losses[0]
    return torch.stack([x.to(losses[0].device, torch.float64) for x in losses]).mean()


class StepBook:
    """Step and skip bookkeeping for `watcher`, reading the loss scale through `scales`."""

    def __init__(self, watcher: Watcher, scales: ScaleReads) -> None:
        self._w = watcher
        self._scales = scales
        self.losses: list[torch.Tensor] = []  # every loss observed in the iteration under way
        self.iteration_open = False  # a forward or loss of the iteration under way was seen
        self.iteration_lr: tuple[float, ...] | None = None  # lr when the iteration under way began
        self.step_lr: tuple[float, ...] = ()
        self.last_was_skip = False
        self.step_losses: list[torch.Tensor] = []  # the losses of the step under way (for the guard)

    def observe(self, loss: torch.Tensor | float) -> None:
        """Keep a reference to a loss of this iteration (`Watcher.observe_loss`); TypeError if not a scalar."""
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise TypeError(f"observe_loss(): expected a scalar loss, got a tensor of shape {tuple(loss.shape)}")
            self.losses.append(loss.detach().reshape(()))
        elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
            self.losses.append(torch.tensor(float(loss), dtype=torch.float64))
        else:
            raise TypeError(f"observe_loss(): expected a scalar tensor or a number, got {type(loss).__name__}")
        self.iteration_open = True

    def forward_seen(self) -> None:
        """An entry forward ran: the first one opens the iteration and notes its lr."""
        if not self.iteration_open:
            self.iteration_open = True
            self.iteration_lr = _lrs(self._w.optimizer)

    def begin_step(self, optimizer: torch.optim.Optimizer) -> int | None:
        """The optimizer's update is about to run: its step number, or None when a fused optimizer's
        kernel will skip it (GradScaler's `found_inf`; one sync): the tap counts that skip at `update()`,
        and without a tap it is counted here."""
        w = self._w
        found_inf = getattr(optimizer, "found_inf", None)  # set by GradScaler.step() for fused optimizers
        if isinstance(found_inf, torch.Tensor) and bool(found_inf.item()):  # the kernel will skip the update
            if self._scales.tap is None:
                self.skipped("scaler")  # an unwatched GradScaler: count the skip here
            return None  # with the tap, update() sees a step that did not happen and counts it
        if self._scales.tap is not None:
            self._scales.tap.stepped()
        step = self._advance()
        self.step_lr = self.iteration_lr or _lrs(optimizer)
        w.tracker.add_events(w._inputs.end_iteration(step, w.tracker.resolve_localization(step)))
        self.step_losses, self.losses = self.losses, []
        return step

    def _advance(self) -> int:
        counters = self._w.counters
        counters.step += 1
        counters.time = time.time()
        self.iteration_open = False
        return counters.step

    def check_scale_drop(self) -> None:
        """A hand-made loss scale that fell since the last read: the loop skipped a step."""
        if self._scales.dropped():
            self.skipped("loss_scale")

    def on_scaler_update(self, skipped: bool) -> None:
        """The GradScaler tap's callback after each `update()` (the watcher guards it)."""
        if skipped or self._w.counters.loss_scale is None:
            self._w.counters.loss_scale = self._scales.tap.scale()  # type: ignore[union-attr]  # one sync
        if skipped:
            self.skipped("scaler")

    def skipped(self, reason: str) -> None:
        """The iteration under way ended without an update: a step of its own, `reason` its skip_reason."""
        w = self._w
        w.counters.skipped_steps += 1
        lr = self.iteration_lr or _lrs(w.optimizer)
        step = self._advance()
        self.last_was_skip = True
        w.tracker.add_events(w._inputs.end_iteration(step, w.tracker.resolve_localization(step)))
        out = w._output.take()
        w._sampler.discard_capture()
        loss, self.losses = mean_loss(self.losses), []
        self._record_skip(step, loss, out, reason, lr)
        self.iteration_lr = None

    def guard_skipped(self, step: int, reason: str) -> None:
        """The guard kept `step` out of the weights (called before it undoes anything): count it like a
        scaler skip, at its own step number; a pending sample of that step is finished now, so its rows
        show the update as computed."""
        w = self._w
        w.counters.skipped_steps += 1
        self.last_was_skip = True
        if w._sampler.pending and w._sampler.step == step:
            w._samples.finish(skip_reason=reason)
            return
        current = step == w.counters.step  # a verdict read one step late has no loss of its own
        self._record_skip(step, mean_loss(self.step_losses) if current else None, None, reason, self.step_lr)

    def _record_skip(self, step: int, loss: torch.Tensor | None, output_nonfinite: torch.Tensor | None,
                     reason: str, lr: tuple[float, ...]) -> None:
        """The tail both kinds of skip share: the StepObs of skipped `step`, its loss read now."""
        value = None if loss is None else float(loss)  # syncs; skipped steps are rare
        self._w.tracker.skipped_step(step, self._scales.after_skip(), value,
                                     None if output_nonfinite is None else int(output_nonfinite), reason, lr)
