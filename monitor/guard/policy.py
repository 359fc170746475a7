"""`Guard`: keeps a non-finite step out of the weights (`on_nonfinite="skip"` or `"stop"`).

Called by the watcher: `before_step(step, sampled)` from an optimizer step pre-hook, `after_step()`
from a post-hook, `resolve()` before each step and on close. It reports each skipped step through
`on_skip(step, reason)` (reason "nonfinite_grad" or "nonfinite_update"), *before* undoing anything,
so the caller can still measure the update as it was computed; it raises `GuardStop` to stop.

How a step is kept out (a pre-hook cannot cancel `optimizer.step()`):
- non-finite gradients, optimizer that takes a device flag (fused Adam/AdamW/SGD...), step not
  sampled: the flag is handed to the optimizer as `found_inf` (as GradScaler does; the attribute is
  removed again in `after_step`) and read one step later: no host sync.
- non-finite gradients otherwise: one host read of the flag; the gradients are hidden (`p.grad =
  None`, restored in `after_step`), so the optimizer skips every parameter.
- with an undo copy (16-bit parameters/state, see undo.py): the step runs, then one check of what
  it wrote (one host read; non-finite gradients make the update non-finite too, so "skip" needs no
  gradient check before the step), and a bad step is restored from the copy. "stop" checks the
  gradients before the step as well, so that it raises before they are applied.
Under a GradScaler the scaler already skips non-finite gradients: the guard checks the update only.
Multi-rank: every flag is all-reduced (one element) before it is read, so all ranks decide alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..findings import Finding
from .flags import DeferredFlag, agree, nonfinite_flag, read
from .stop import stop_error
from .undo import UndoCopy, needs_copy

__all__ = ["Guard"]

GRAD, UPDATE = "nonfinite_grad", "nonfinite_update"


class Guard:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, mode: str,
                 max_skips: int | None, checkpoint: Callable[[dict[str, Any]], Any] | None,
                 grad_scaler: bool, on_skip: Callable[[int, str], None],
                 findings: Callable[[], list[Finding]]) -> None:
        self.model, self.optimizer, self.mode = model, optimizer, mode
        self.max_skips, self.checkpoint = max_skips, checkpoint
        self._on_skip, self.findings = on_skip, findings
        self._check_grads = not grad_scaler  # the scaler skips non-finite gradients itself
        self._undo = UndoCopy(optimizer) if needs_copy(optimizer) else None
        self._device = next((p.device for p in self._params()), torch.device("cpu"))
        self._device_flag = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self._step = 0
        self._hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._found_inf_set = False
        self._deferred: DeferredFlag | None = None
        self._saved = False
        self._closing = False
        self.consecutive = 0
        self.last_good = 0  # the last step whose update was applied

    @property
    def undo_bytes(self) -> int:
        return 0 if self._undo is None else self._undo.nbytes

    def resolve(self) -> None:
        """Read a device-side verdict left by the previous step (no wait: it was computed long ago)."""
        d, self._deferred = self._deferred, None
        if d is None:
            return
        if d.value():
            self._skip(d.step, GRAD)
        else:
            self._applied(d.step)

    def before_step(self, step: int, sampled: bool) -> None:
        """Pre-hook. `sampled`: the watcher records this step now, so the verdict must be known now."""
        self._give_back()  # left over when the previous optimizer.step() raised
        self._step, self._saved = step, False
        if self._undo is not None and self.mode == "skip":
            self._save()  # one check after the step also catches non-finite gradients: one sync
            return
        flag = agree(self._flag(self._grads())) if self._check_grads else None
        if flag is None:  # under a GradScaler: only the update is checked
            self._save()
            return
        if self._device_flag and self.mode == "skip" and not sampled and not self._has_scaler_attrs():
            self.optimizer.found_inf = flag  # the optimizer skips on the device; deleted in after_step
            self._found_inf_set = True
            self._deferred = DeferredFlag(step, flag)
            return
        if read(flag):
            self._skip(step, GRAD)  # may raise GuardStop: nothing was touched yet
            self._hidden = [(p, p.grad) for p in self._params() if p.grad is not None]
            for p, _ in self._hidden:
                p.grad = None
            return
        if self._undo is None:
            self._applied(step)
        self._save()

    def after_step(self) -> None:
        """Post-hook: give back hidden gradients / the found_inf attribute; check and maybe undo."""
        self._give_back()
        if not self._saved:
            return
        self._saved = False
        if not read(agree(self._flag(self._undo.touched()))):  # type: ignore[union-attr]
            self._applied(self._step)
            return
        # a failing step (every rank is here): were the gradients already bad? (they are still there)
        grad_bad = self._check_grads and read(agree(self._flag(self._grads())))
        self._skip(self._step, GRAD if grad_bad else UPDATE, before_undo=self._undo.restore)  # type: ignore[union-attr]

    def remove(self) -> None:
        """Undo anything still lent out (a step that raised) and read a pending verdict."""
        self._give_back()
        self._saved = False
        self._closing = True  # a verdict read now is recorded, never raised out of close()
        self.resolve()

    # -- internals --------------------------------------------------------------------------
    def _skip(self, step: int, reason: str, before_undo: Callable[[], None] | None = None) -> None:
        """Report, undo (when there is something to undo), then stop if the policy says so."""
        self.consecutive += 1
        try:
            self._on_skip(step, reason)
        finally:
            if before_undo is not None:
                before_undo()
        if self._closing:
            return
        if self.mode == "stop" or (self.max_skips is not None and self.consecutive > self.max_skips):
            raise stop_error(self, step, reason)

    def _save(self) -> None:
        if self._undo is not None:
            self._undo.save()
            self._saved = True

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params() if p.grad is not None]

    def _flag(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """A flag even for no tensors: every rank must take part in the same all-reduces."""
        return nonfinite_flag(tensors, self._device)

    def _applied(self, step: int) -> None:
        self.consecutive, self.last_good = 0, step

    def _give_back(self) -> None:
        for p, grad in self._hidden:
            if p.grad is None:  # not when a new backward has filled it since (a step that raised)
                p.grad = grad
        self._hidden = []
        if self._found_inf_set:
            self.optimizer.__dict__.pop("found_inf", None)
            self._found_inf_set = False

    def _has_scaler_attrs(self) -> bool:
        """GradScaler (or someone) already lent the optimizer a found_inf/grad_scale: leave them."""
        return "found_inf" in self.optimizer.__dict__ or "grad_scale" in self.optimizer.__dict__
