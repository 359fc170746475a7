"""`monitor.localize(model, run_batch)`: replay one batch with localisation hooks, on demand."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .capture import entry_modules
from .errors import ConfigError
from .history import Event
from .localize import Localizer
from .values import dense, output_tensors

__all__ = ["localize"]

log = logging.getLogger("monitor")


class _Errors:
    """Guard for the replay's hooks: an error inside one is counted and logged once, never raised into
    `run_batch` (the replay then reports what the other hooks saw)."""

    def __init__(self) -> None:
        self.count = 0

    def guard(self, fn: Callable[..., Any]) -> Callable[..., None]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                self.count += 1
                if self.count == 1:
                    log.warning("slat-monitor: error inside a localize() hook (the replay goes on): %r", exc,
                                exc_info=True)

        return guarded


def localize(model: nn.Module, run_batch: Callable[[nn.Module], Any], *, backward: bool = True) -> list[Event]:
    """Run `run_batch(model)` once with forward (and backward) hooks on every module and return events:
    the deepest module call whose inputs were finite and output not ("localized", forward; a parent whose
    own code made the value between finite children is named, not the child that received it), if
    `backward` the deepest whose output gradients were finite and input gradients not ("localized",
    backward), and the model's non-finite inputs, named as passed ("nonfinite", tensor "input"; then no
    module is blamed for what it received). An empty list: everything stayed finite.

    `run_batch` returns the loss (or any output holding tensors). The backward pass goes through
    `torch.autograd.grad`, so the parameters' `.grad` are left as they were; no optimizer runs and
    the model is not changed (its modules' train/eval mode neither). Syncs with the GPU once at the end.
    An error inside the replay's own hooks or backward is logged and never reaches the caller (the
    events the rest saw are returned); an exception `run_batch` itself raises propagates, after every
    hook is removed.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"localize(): model must be a torch.nn.Module, got {type(model).__name__!r}")
    if not callable(run_batch):
        raise ConfigError("localize(): run_batch must be a callable taking the model and returning the loss")
    errors = _Errors()
    loc = Localizer(model, errors.guard, entries=entry_modules(model), inputs=True)
    try:
        result = run_batch(model)
        if backward:
            errors.guard(_backward)(model, result)  # e.g. a graph run_batch already freed: forward events stay
    finally:
        loc.remove()
    events, _ = loc.resolve(step=0)
    return events


def _backward(model: nn.Module, result: Any) -> None:
    outs = [t for t in dense(output_tensors(result)) if t.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    if not outs or not params:
        return
    loss = sum(t.float().sum() for t in outs) if len(outs) > 1 or outs[0].numel() > 1 else outs[0]
    torch.autograd.grad(loss, params, allow_unused=True)
