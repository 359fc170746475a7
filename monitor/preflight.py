"""Pre-flight: describe the model/optimizer/scaler set-up as a RunInfo, and lint it before step 1.

The lint is the diagnosis rules run over a History with no steps yet: configuration-only rules
(e.g. Adam eps below what fp16 state can hold, the TRELLIS #162 set-up) fire before the failure.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from .findings import Finding
from .history import GroupInfo, History, LayerInfo, RunInfo
from .layers import LayerMap
from .probes import DeviceBatch

__all__ = ["describe", "lint", "log_critical", "typical_abs"]

_STATE_KEYS = ("exp_avg_sq", "exp_avg", "square_avg", "momentum_buffer")


def _dtype(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _float(v: object) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)  # type: ignore[arg-type]


def _group_info(group: dict) -> GroupInfo:
    betas = group.get("betas")
    eps = group.get("eps")
    return GroupInfo(
        lr=_float(group.get("lr", 0.0)),
        eps=None if eps is None else _float(eps),
        betas=(float(betas[0]), float(betas[1])) if betas else None,
        weight_decay=float(group.get("weight_decay", 0.0) or 0.0),
        amsgrad=bool(group.get("amsgrad", False)),
        fused=bool(group.get("fused") or False),
    )


def _state_dtype(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> str | None:
    state = optimizer.state.get(p, {})
    for key in _STATE_KEYS:
        t = state.get(key)
        if isinstance(t, torch.Tensor):
            return _dtype(t.dtype)
    return None


def typical_abs(layers: LayerMap) -> dict[str, float]:
    """Mean |w| per layer over its trainable fp16/bf16 tensors that are not all zero (a zero-initialised
    bias would drag a LayerNorm's 1.0 down): what an update must move to register. One fused pass and
    one host read per device, only when the model has such tensors."""
    low = [p if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16) else None for p in layers.params]
    if not any(p is not None for p in low):
        return {}
    b = DeviceBatch()
    b.add("abs", low, "abs_sum")
    sums = b.fetch()["abs"]
    per: dict[str, list[float]] = {}
    for p, li, total in zip(layers.params, layers.param_layer, sums):
        if total:  # None: not 16-bit; 0: all zero
            acc = per.setdefault(layers.names[li], [0.0, 0.0])
            acc[0] += total
            acc[1] += p.numel()
    return {name: total / n for name, (total, n) in per.items()}


def describe(model: nn.Module, optimizer: torch.optim.Optimizer, layers: LayerMap, *, scaler_kind: str,
             run: str, rank: int, every: int, autocast: str | None = None,
             typical: dict[str, float] | None = None) -> RunInfo:
    """A RunInfo of the current set-up. Reads optimizer state dtypes; no GPU sync. `typical`: mean |w|
    per layer (typical_abs(), measured once at watch())."""
    group_of = {id(p): gi for gi, g in enumerate(optimizer.param_groups) for p in g["params"]}
    opt_ids = set(group_of)
    per_layer: dict[str, list[torch.Tensor]] = {n: [] for n in layers.names}
    for p, li in zip(layers.params, layers.param_layer):
        per_layer[layers.names[li]].append(p)
    infos = {}
    modules = dict(zip(layers.names, layers.modules))
    for name, params in per_layer.items():
        in_opt = [p for p in params if id(p) in opt_ids]
        state = next((d for d in (_state_dtype(optimizer, p) for p in in_opt) if d), None)
        infos[name] = LayerInfo(
            dtype=_dtype(params[0].dtype),
            state_dtype=state,
            numel=sum(p.numel() for p in params),
            trainable=any(p.requires_grad for p in params),
            in_optimizer=bool(in_opt),
            group=group_of[id(in_opt[0])] if in_opt else None,
            typical_abs=(typical or {}).get(name),
            modules=modules.get(name, 1),
        )
    device = next((str(p.device) for p in layers.params), "cpu")
    return RunInfo(
        run=run, rank=rank, torch_version=torch.__version__, device=device,
        optimizer=type(optimizer).__name__,
        groups=tuple(_group_info(g) for g in optimizer.param_groups),
        scaler=scaler_kind,
        master_weights=not any(id(p) in opt_ids for p in layers.params),
        layers=infos, every=every, started=time.time(), autocast=autocast,
    )


def lint(info: RunInfo) -> list[Finding]:
    """Findings that follow from the configuration alone (first_step 0)."""
    if os.environ.get("SLATMON_NO_PREFLIGHT") == "1":
        return []
    from .diagnosis import run_rules

    return run_rules(History(run=info))


def log_critical(findings: list[Finding], logger: logging.Logger | None = None) -> int:
    """Log every critical pre-flight finding once, as one warning line with its first fix's first
    sentence (logger "monitor"); names escaped for the terminal. Returns how many were logged."""
    from .diagnosis.report import headline
    from .terminal import printable

    logger = logger or logging.getLogger("monitor")
    critical = [f for f in findings if f.severity == "critical"]
    for f in critical:
        fix = f" Fix: {headline(f.fixes[0].summary)}" if f.fixes else ""
        logger.warning("slat-monitor pre-flight: %s", printable(f"[CRITICAL] {f.code}: {f.title}.{fix} "
                                                                 "(all fixes: watcher.findings() or "
                                                                 "slat-monitor diagnose)"))
    return len(critical)
