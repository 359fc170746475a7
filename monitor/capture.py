"""Where a training iteration can be seen from outside: the model's entry modules, their outputs, and
the end of each backward pass.

`entry_modules(model)`: the modules whose `forward` the training loop really calls. A container root
(`nn.ModuleDict(trainer.models)`, as TRELLIS's models dict is naturally watched) has no `forward`
of its own, so its children are hooked instead.

`OutputProbe`: forward hooks on the entry modules, active only on iterations the watcher will
sample. It counts the non-finite elements of the entry outputs (the pseudo-layer `[output]`) and
registers a gradient hook on them that queues `on_backward_end` at the end of that backward pass:
the gradients as backward left them, before the loop clips, unscales or all-reduces them... except
that DDP's all-reduce is waited for (the callback re-queues itself once, so it runs after DDP's own
end-of-backward callback). Device-side only; nothing here syncs with the GPU or changes a tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .values import count_nonfinite, output_tensors

__all__ = ["OutputProbe", "entry_modules"]


def _has_forward(module: nn.Module) -> bool:
    return type(module).forward is not nn.Module.forward  # ModuleDict / ModuleList have none


def entry_modules(model: nn.Module) -> list[nn.Module]:
    """`model` itself, or, for a container without `forward`, its children (recursively)."""
    if _has_forward(model):
        return [model]
    found: list[nn.Module] = []
    for child in model.children():
        found += entry_modules(child)
    return found or [model]


def _engine() -> Any:
    return torch.autograd.Variable._execution_engine  # type: ignore[attr-defined]


def _graph_task() -> int:
    """The id of the backward pass (graph task) running now."""
    return torch._C._current_graph_task_id()


class OutputProbe:
    """Per sampled iteration: NaN+Inf count of the entry outputs (`take()`), and `on_backward_end()`
    called once at the end of each backward pass through them.

    `wanted()` says whether the iteration under way will be sampled; `guard(fn)` wraps every hook
    body so that a failure inside it is counted by the watcher and never reaches the training loop.
    """

    def __init__(self, model: nn.Module, wanted: Callable[[], bool], on_backward_end: Callable[[], None],
                 guard: Callable[[Callable[..., None]], Callable[..., None]]) -> None:
        self._wanted = wanted
        self._on_backward_end = on_backward_end
        self._grad_hook = guard(self._grad)
        self._end = guard(self._end_of_backward)  # runs from the autograd engine: guarded like every hook
        self._requeue = guard(self._queue_end)
        self._queued: int | None = None  # the backward pass (graph task) whose end is queued
        self.count: torch.Tensor | None = None
        hook = torch.compiler.disable(guard(self._forward))  # eager even on a torch.compile'd module
        self._handles = [m.register_forward_hook(hook) for m in entry_modules(model)]

    def _forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not torch.is_grad_enabled() or not self._wanted():  # skip eval passes and unsampled steps
            return
        outs = output_tensors(output)
        n = count_nonfinite(outs)  # sparse outputs: their stored values; nested / meta ones: not counted
        if n is not None:
            self.count = n if self.count is None else self.count + n.to(self.count.device)
        for t in outs:
            if t.requires_grad:
                t.register_hook(self._grad_hook)

    def _grad(self, grad: torch.Tensor) -> None:
        task = _graph_task()
        if task == self._queued or not self._handles:  # once per backward pass, however many outputs
            return
        self._queued = task  # a backward that raises never runs its callback: the next pass queues anew
        # DDP queues its all-reduce finaliser from the first parameter hook, after this one:
        # queue a callback that queues the real one, which then runs after DDP's.
        _engine().queue_callback(self._requeue)

    def _queue_end(self) -> None:
        _engine().queue_callback(self._end)

    def _end_of_backward(self) -> None:
        self._queued = None
        if self._handles:
            self._on_backward_end()

    def take(self) -> torch.Tensor | None:
        """The count accumulated since the last take() (all micro-batches of an iteration)."""
        count, self.count = self.count, None
        return count

    def remove(self) -> None:
        """Remove the forward hooks; gradient hooks still in a live graph become no-ops."""
        for h in self._handles:
            h.remove()
        self._handles = []
