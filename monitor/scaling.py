"""Loss-scale taps: read the scale and count skipped steps without changing the scaler's behaviour.

A GradScaler skips `optimizer.step()` when it finds inf/NaN gradients, so optimizer hooks never see
a skipped step. `GradScalerTap` wraps the scaler instance's `update()` (restored exactly on
`remove()`): an update with no optimizer step since the previous update is a skipped step. That
needs no GPU sync; the new scale is read (one sync) only after a skipped step.

A hand-made loss scale (`loss_scale=callable`, e.g. TRELLIS's `2 ** log_scale`) is halved instead
of stepping: `CustomScaleTap` reports a skipped step whenever the scale it reads has dropped.
"""

from __future__ import annotations

import contextlib
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
    watcher's optimizer pre-hook. Any number of taps (watchers) share one wrapper per scaler instance
    (`_SharedUpdate`), so they can be removed in any order and the last one out restores `update`."""

    def __init__(self, scaler: Any, on_update: Callable[[bool], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.scaler = scaler
        self._on_update = on_update
        self._on_error = on_error  # told of an exception inside the wrapper (which never raises it)
        self._stepped = False
        shared = _SHARED.get(id(scaler))
        self._shared = shared if shared is not None else _SharedUpdate(scaler)
        self._shared.taps.append(self)

    def stepped(self) -> None:
        self._stepped = True

    def _take(self) -> bool:
        """Whether the update about to run follows no optimizer step (a skipped step); resets."""
        skipped, self._stepped = not self._stepped, False
        return skipped

    def scale_tensor(self) -> torch.Tensor | float | None:
        """The current scale without a sync when the scaler keeps it as a tensor."""
        s = getattr(self.scaler, "_scale", None)
        return s if isinstance(s, torch.Tensor) else (None if s is None else float(s))

    def scale(self) -> float:
        return float(self.scaler.get_scale())  # syncs with the GPU

    def _failed(self, exc: Exception) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(exc)

    def remove(self) -> None:
        """Stop listening; the last tap of the scaler puts `update` back. Idempotent."""
        self._on_update = lambda skipped: None
        self._shared.leave(self)


def _call(tap: GradScalerTap, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, or None with the exception handed to the tap's watcher: never raised into `update()`."""
    try:
        return fn(*args)
    except Exception as exc:
        tap._failed(exc)
        return None


class _SharedUpdate:
    """The one wrapper around a scaler instance's `update()` (in the instance's `__dict__`, never its
    class). `original` is what `scaler.update` was when the first tap came: the bound method, or a
    wrapper someone else installed, which then keeps running exactly as before."""

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler
        self.taps: list[GradScalerTap] = []
        self._saved = scaler.__dict__.get("update", _MISSING)
        original = scaler.update

        def update(*args: Any, **kwargs: Any) -> Any:
            pending = [(tap, _call(tap, tap._take)) for tap in list(self.taps)]
            result = original(*args, **kwargs)  # the scaler's own update: what it raises is the caller's
            for tap, skipped in pending:
                if skipped is not None:
                    _call(tap, tap._on_update, skipped)
            return result

        self._wrapper = update
        scaler.update = update
        _SHARED[id(scaler)] = self

    def leave(self, tap: GradScalerTap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)
        if self.taps or _SHARED.get(id(self.scaler)) is not self:
            return
        del _SHARED[id(self.scaler)]
        if self.scaler.__dict__.get("update", _MISSING) is not self._wrapper:
            return  # someone wrapped update() over ours since: theirs stays, ours now only passes through
        if self._saved is _MISSING:
            del self.scaler.__dict__["update"]
        else:
            self.scaler.__dict__["update"] = self._saved


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
# id(scaler) -> its wrapper; the entry holds the scaler, so the id cannot be reused while it is there
_SHARED: dict[int, _SharedUpdate] = {}
