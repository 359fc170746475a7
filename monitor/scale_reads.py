"""`ScaleReads`: the loss scale as a Watcher reads it, from a GradScaler's tap, a hand-made `loss_scale`
callable, or neither (the counters' value).

No read here syncs with the GPU (a GradScaler's scale stays a tensor); the one sync after a
GradScaler skip is the tap's `scale()`, made by the step book.
"""

from __future__ import annotations

import torch

from .scaling import CustomScaleTap, GradScalerTap
from .snapshot import Counters

__all__ = ["ScaleReads"]


class ScaleReads:
    """The watcher's loss-scale taps (`tap`, `custom`: set when the hooks are attached, None before and
    when not in use) and the reads made of them at each point of a step."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self.tap: GradScalerTap | None = None
        self.custom: CustomScaleTap | None = None

    def dropped(self) -> bool:
        """Read a hand-made loss scale: True if it fell since the last read (the loop skipped a step).
        False without one."""
        return self.custom is not None and self.custom.dropped()

    def in_grads(self) -> torch.Tensor | float:
        """The loss scale the gradients carry at the end of backward (no sync)."""
        if self.tap is not None:
            scale = self.tap.scale_tensor()
            return 1.0 if scale is None else scale
        if self.custom is not None:
            return self.custom.scale()
        return 1.0

    def now(self, optimizer: torch.optim.Optimizer, master: bool) -> tuple[torch.Tensor | float | None,
                                                                          torch.Tensor | float]:
        """(loss scale for this step, the scale the gradients still carry at optimizer.step()); `master`:
        the optimizer updates an fp32 master copy, whose gradients carry a hand-made scale."""
        carried = getattr(optimizer, "grad_scale", None)  # GradScaler + fused optimizer: not unscaled yet
        if not isinstance(carried, torch.Tensor):
            carried = 1.0
        if self.tap is not None:
            return self.tap.scale_tensor(), carried
        if self.custom is not None:
            s = self.custom.scale()
            self.custom.last = s
            return s, s if master else carried
        return self._counters.loss_scale, carried

    def after_skip(self) -> float | None:
        """The scale after a skip: the GradScaler's was just read by the step book's `on_scaler_update`."""
        if self.custom is not None:
            return self.custom.last
        return self._counters.loss_scale
