"""Helpers shared by the integration tests: hooks left behind, bitwise comparison, critical findings."""

from __future__ import annotations

import torch
from torch import nn

MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                   "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")


def hooks_left(modules: list[nn.Module], optimizers: list[torch.optim.Optimizer], scaler=None) -> int:
    """Every hook on the modules (all submodules), their parameters, the optimizers, and a wrapped
    scaler.update(): 0 when nothing of ours is left."""
    n = sum(len(getattr(m, a, None) or {}) for root in modules for m in root.modules() for a in MODULE_HOOKS)
    n += sum(len(getattr(p, a, None) or {}) for root in modules for p in root.parameters()
             for a in ("_backward_hooks", "_post_accumulate_grad_hooks"))
    n += sum(len(getattr(o, a, None) or {}) for o in optimizers for a in OPTIMIZER_HOOKS)
    return n + int(scaler is not None and "update" in vars(scaler))


def assert_bitwise_equal(plain: dict[str, torch.Tensor], seen: dict[str, torch.Tensor]) -> None:
    assert plain.keys() == seen.keys()
    for name, p in plain.items():
        q = seen[name]
        assert p.dtype == q.dtype, name
        assert torch.equal(torch.isnan(p), torch.isnan(q)), name
        assert torch.equal(torch.nan_to_num(p), torch.nan_to_num(q)), name


def params_of(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def critical(findings) -> list[str]:
    return [f.code for f in findings if f.severity == "critical"]
