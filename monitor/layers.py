"""Which layer (module path) each parameter belongs to, with a cap on how many layers are exported."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerMap", "module_path"]

_COMPILED_PREFIX = "_orig_mod."  # torch.compile's OptimizedModule holds the model under this name


def module_path(name: str) -> str:
    """A parameter or module name as the user's model spells it (torch.compile's wrapper dropped)."""
    return name.removeprefix(_COMPILED_PREFIX) if name != _COMPILED_PREFIX.rstrip(".") else ""

log = logging.getLogger("monitor")


def _owner(name: str, depth: int | None) -> str:
    parts = name.split(".")[:-1] or ["<root>"]
    return ".".join(parts[:depth] if depth else parts)


@dataclass(frozen=True)
class LayerMap:
    """Parameters of a model grouped by the module that owns them (`blocks.0.attn.qkv`).

    `group_depth` truncates module paths (`blocks.0`) to bound the number of series; when the
    layer count still exceeds `max_layers`, the deepest depth that fits is chosen automatically.
    """

    names: tuple[str, ...]  # layer names, in model order
    params: tuple[torch.Tensor, ...]  # every parameter, in model order
    param_layer: tuple[int, ...]  # index into names, per parameter
    depth: int | None

    @classmethod
    def build(cls, model: nn.Module, max_layers: int = 512, group_depth: int | None = None) -> LayerMap:
        named = [(module_path(n), p) for n, p in model.named_parameters()]
        depth = group_depth
        layer_names = _layer_names(named, depth)
        if len(layer_names) > max_layers:
            depth = _fitting_depth(named, max_layers)
            log.warning("slat-monitor: %d layers exceed max_layers=%d; grouping module paths to depth %d",
                        len(layer_names), max_layers, depth)
            layer_names = _layer_names(named, depth)
        index = {n: i for i, n in enumerate(layer_names)}
        return cls(
            names=tuple(layer_names),
            params=tuple(p for _, p in named),
            param_layer=tuple(index[_owner(n, depth)] for n, _ in named),
            depth=depth,
        )

    def layer_of(self) -> dict[int, int]:
        """id(parameter) -> layer index."""
        return {id(p): li for p, li in zip(self.params, self.param_layer)}


def _layer_names(named: list[tuple[str, torch.Tensor]], depth: int | None) -> list[str]:
    return list(dict.fromkeys(_owner(n, depth) for n, _ in named))


def _fitting_depth(named: list[tuple[str, torch.Tensor]], max_layers: int) -> int:
    depth = max((n.count(".") for n, _ in named), default=1)
    while depth > 1 and len(_layer_names(named, depth)) > max_layers:
        depth -= 1
    return depth
