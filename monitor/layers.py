"""Which layer (module path) each parameter belongs to, with a cap on how many layers are exported."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .layer_fit import fit

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
    layer count still exceeds `max_layers`, monitor/layer_fit.py fits them: the deepest depth that
    fits, and one level deeper contiguous sibling ranges (`layers.[0-9]`). `param_names` keep every
    parameter's own name, so a non-finite tensor is still named exactly inside a grouped layer.
    """

    names: tuple[str, ...]  # layer names, in model order
    params: tuple[torch.Tensor, ...]  # every parameter, in model order
    param_layer: tuple[int, ...]  # index into names, per parameter
    depth: int | None
    param_names: tuple[str, ...] = ()  # per parameter, as the model names it (`layers.7.weight`)
    modules: tuple[int, ...] = ()  # per layer: modules owning parameters folded into it (1: itself)

    @classmethod
    def build(cls, model: nn.Module, max_layers: int = 512, group_depth: int | None = None) -> LayerMap:
        named = [(module_path(n), p) for n, p in model.named_parameters()]
        owners = [_owner(n, None) for n, _ in named]
        shown = {o: _truncate(o, group_depth) for o in owners}  # group_depth first, as asked
        fitted = fit(list(dict.fromkeys(shown.values())), max_layers)
        layer_of = {o: fitted[s] for o, s in shown.items()}
        layer_names = list(dict.fromkeys(layer_of[o] for o in owners))
        if len(set(shown.values())) > max_layers:
            _log_grouping(len(set(owners)), layer_names, max_layers)
        index = {n: i for i, n in enumerate(layer_names)}
        modules = [0] * len(layer_names)
        for o in dict.fromkeys(owners):
            modules[index[layer_of[o]]] += 1
        return cls(
            names=tuple(layer_names),
            params=tuple(p for _, p in named),
            param_layer=tuple(index[layer_of[o]] for o in owners),
            depth=group_depth,
            param_names=tuple(n for n, _ in named),
            modules=tuple(modules),
        )

    def layer_of(self) -> dict[int, int]:
        """id(parameter) -> layer index."""
        return {id(p): li for p, li in zip(self.params, self.param_layer)}


def _truncate(path: str, depth: int | None) -> str:
    return ".".join(path.split(".")[:depth]) if depth else path


def _log_grouping(modules: int, names: list[str], max_layers: int) -> None:
    example = next((n for n in names if "[" in n), names[0])
    log.warning("slat-monitor: %d modules with parameters exceed max_layers=%d: measured as %d layers (e.g. %r); "
                "the record and the metrics show these groups (slatmon_layers_grouped counts the modules inside "
                "them), non-finite events still name the exact parameter; pass max_layers=%d to keep every "
                "module", modules, max_layers, len(names), example, modules)
