"""Loss-scale taps: read the scale and count skipped steps without changing the scaler's behaviour.

A GradScaler skips `optimizer.step()` when it finds inf/NaN gradients, so optimizer hooks never see
a skipped step. `GradScalerTap` wraps the scaler instance's `update()` (restored exactly on
`remove()`): an update with no optimizer step since the previous update is a skipped step. That
needs no GPU sync; the new scale is read (one sync) only after a skipped step.

A hand-made loss scale (`loss_scale=callable`, e.g. TRELLIS's `2 ** log_scale`) is halved instead
of stepping: `CustomScaleTap` reports a skipped step whenever the scale it reads has dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CustomScaleTap", "GradScalerTap", "scaler_kind"]


def scaler_kind(scaler: Any, loss_scale: Callable[[], float] | None) -> str:
    if scaler is not None:
        return "grad_scaler" if scaler.is_enabled() else "disabled"
    return "custom" if loss_scale is not None else "none"


class GradScalerTap:
    """Calls `on_update(skipped)` after each `scaler.update()`; `stepped()` is called by the
    watcher's optimizer pre-hook."""

    def __init__(self, scaler: Any, on_update: Callable[[bool], None]) -> None:
        self.scaler = scaler
        self._on_update = on_update
        self._stepped = False
        self._saved = scaler.__dict__.get("update", _MISSING)
        original = scaler.update

        def update(*args: Any, **kwargs: Any) -> Any:
            skipped = not self._stepped
            self._stepped = False
            result = original(*args, **kwargs)
            self._on_update(skipped)
            return result

        scaler.update = update

    def stepped(self) -> None:
        self._stepped = True

    def scale_tensor(self) -> torch.Tensor | float | None:
        """The current scale without a sync when the scaler keeps it as a tensor."""
        s = getattr(self.scaler, "_scale", None)
        return s if isinstance(s, torch.Tensor) else (None if s is None else float(s))

    def scale(self) -> float:
        return float(self.scaler.get_scale())  # syncs with the GPU

    def remove(self) -> None:
        if self._saved is _MISSING:
            self.scaler.__dict__.pop("update", None)
        else:
            self.scaler.update = self._saved
        self._saved = _MISSING
        self._on_update = lambda skipped: None


class CustomScaleTap:
    """Reads `loss_scale()` (a plain float; no tensor) and detects drops."""

    def __init__(self, loss_scale: Callable[[], float]) -> None:
        self._read = loss_scale
        self.last: float | None = None

    def scale(self) -> float:
        return float(self._read())

    def dropped(self) -> bool:
        """Read the scale; True if it fell since the last read (a skipped step)."""
        now = self.scale()
        fell = self.last is not None and now < self.last
        self.last = now
        return fell


_MISSING: Any = object()
