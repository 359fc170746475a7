"""Parameters changed after `watch()`: detected on sampled steps, so the watcher can describe them again.

A training loop may replace a parameter (`model.head.weight = nn.Parameter(...)`) or a module
(`model.head = nn.Linear(...)`), add one, convert dtypes or devices in place (`model.half()` keeps
the Parameter objects and changes their dtype), or give the optimizer new parameters
(`optimizer.add_param_group`). The layer map made at `watch()` would then measure stale tensors, or
miss new ones. `ParamWatch.changed()` compares the model and optimizer with what it saw when it was
made: one flat pass over every module's own parameter and child dicts (no recursion, no GPU access: a
few ms for 10,000 parameter tensors on one CPU core). The watcher calls it on sampled steps only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .history import Event
from .layers import LayerMap

__all__ = ["ParamWatch", "change_event"]

_SHOWN = 10  # layer names listed in an event's detail


def _optimizer_params(optimizer: torch.optim.Optimizer) -> tuple[tuple[torch.Tensor, ...], ...]:
    return tuple(tuple(g["params"]) for g in optimizer.param_groups)


class ParamWatch:
    """What `model` and `optimizer` hold now; `changed()` says whether that is still so.

    Holds references to the modules and parameters it saw (as the layer map does), so an `id` can
    never be reused by a new object while it compares."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        modules = list(model.modules())
        self._params = [(m._parameters, name, p, _kind(p)) for m in modules for name, p in m._parameters.items()]
        self._children = [(m._modules, name, c) for m in modules for name, c in m._modules.items()]
        self._sizes = [(m._parameters, len(m._parameters), m._modules, len(m._modules)) for m in modules]
        self._groups = _optimizer_params(optimizer)

    def changed(self) -> bool:
        """True when a parameter or module was replaced, added or removed, a parameter's dtype or device
        changed, or the optimizer's param groups differ from what they were."""
        for owner, name, p, kind in self._params:
            q = owner.get(name)
            if q is not p or _kind(q) != kind:
                return True
        for owner, name, c in self._children:
            if owner.get(name) is not c:
                return True
        for params, n_params, children, n_children in self._sizes:
            if len(params) != n_params or len(children) != n_children:
                return True
        groups = self.optimizer.param_groups
        if len(groups) != len(self._groups):
            return True
        return any(len(g["params"]) != len(old) or any(a is not b for a, b in zip(g["params"], old))
                   for g, old in zip(groups, self._groups))


def _kind(p: Any) -> tuple[Any, Any] | None:
    return None if p is None else (p.dtype, p.device)


def change_event(step: int, before: LayerMap, after: LayerMap, optimizer: torch.optim.Optimizer) -> Event:
    """The `params_changed` event: layers added and removed, and trainable parameters the optimizer does
    not hold (a module replaced without telling the optimizer: its new weights never train)."""
    old, new = set(before.names), set(after.names)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    orphans = list(dict.fromkeys(n for n, p in _named(after) if p.requires_grad and id(p) not in held))
    if not any(id(p) in held for p in after.params):  # an fp32 master copy (TRELLIS inflat_all): none, by design
        orphans = []
    return Event(step, "params_changed", None, None, {
        "layers": len(after.names), "params": len(after.params),
        "added": sorted(new - old)[:_SHOWN], "removed": sorted(old - new)[:_SHOWN],
        "not_in_optimizer": orphans[:_SHOWN], "not_in_optimizer_count": len(orphans)})


def _named(layers: LayerMap) -> list[tuple[str, torch.Tensor]]:
    return [(layers.names[li], p) for p, li in zip(layers.params, layers.param_layer)]
