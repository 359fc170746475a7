"""Hand-built observation histories for the rule tests: a healthy baseline plus small edits."""

from __future__ import annotations

import dataclasses
import math

from monitor.history import Event, GroupInfo, History, LayerInfo, LayerObs, RunInfo, StepObs

FP16_BLOCKS = {"input_layer": "float32", "blocks.0": "float16", "blocks.1": "float16", "out_layer": "float32"}
FP32_MODEL = {"input_layer": "float32", "blocks.0": "float32", "blocks.1": "float32", "out_layer": "float32"}


def run_info(layers: dict[str, str] | None = None, *, optimizer: str = "AdamW", lr: float = 1e-4,
             eps: float | None = 1e-8, fused: bool = False, scaler: str = "none", in_optimizer: bool = True,
             state_dtype: str | None = None, numel: int = 1000, **kw: object) -> RunInfo:
    """A RunInfo with one param group; `layers` maps module path -> parameter dtype."""
    layers = FP16_BLOCKS if layers is None else layers
    infos = {name: LayerInfo(dtype=dt, state_dtype=state_dtype, numel=numel, in_optimizer=in_optimizer, group=0)
             for name, dt in layers.items()}
    group = GroupInfo(lr=lr, eps=eps, betas=(0.9, 0.999), weight_decay=0.0, fused=fused)
    return RunInfo(run="test", optimizer=optimizer, groups=(group,), scaler=scaler, layers=infos,
                   torch_version="2.13.0+cpu", device="cuda:0", master_weights=not in_optimizer, **kw)


def healthy_row(step: int, layer: str, **changes: object) -> LayerObs:
    row = LayerObs(step=step, layer=layer, grad_norm=0.5, param_norm=20.0, update_ratio=1e-3, grad_nonfinite=0,
                   param_nonfinite=0, param_nonfinite_before=0, zero_grad_ratio=0.01, state_zero_ratio=0.0)
    return dataclasses.replace(row, **changes)


def healthy(run: RunInfo | None = None, steps: int = 30, *, loss_scale: float | None = None) -> History:
    """Finite, slowly improving training: grad norm ~1, update ratio 1e-3, no skips."""
    run = run or run_info()
    obs, rows = [], []
    lr = tuple(g.lr for g in run.groups)
    eps = tuple(g.eps for g in run.groups)
    for s in range(1, steps + 1):
        obs.append(StepObs(step=s, loss=2.0 * math.exp(-s / 50), loss_scale=loss_scale,
                           grad_norm_total=1.0 + 0.1 * math.sin(s), grad_nonfinite=0, param_nonfinite=0,
                           lr=lr, eps=eps))
        rows += [healthy_row(s, name) for name in run.layers]
    return History(run=run, steps=obs, layers=rows)


def replace_step(h: History, step: int, **changes: object) -> History:
    h.steps = [dataclasses.replace(s, **changes) if s.step == step else s for s in h.steps]
    return h


def replace_rows(h: History, step: int, layers: list[str] | None = None, **changes: object) -> History:
    h.layers = [dataclasses.replace(r, **changes) if r.step == step and (layers is None or r.layer in layers)
                else r for r in h.layers]
    return h


def localized(step: int, layer: str, direction: str = "forward", dtype: str = "float16",
              in_absmax: float = 3.0, out_absmax: float = math.inf) -> Event:
    return Event(step, "localized", layer, "activation" if direction == "forward" else "grad",
                 {"direction": direction, "dtype": dtype, "nonfinite": 10, "in_absmax": in_absmax,
                  "out_absmax": out_absmax})


def scaled(steps: int, scales: list[float], skipped: list[bool], run: RunInfo | None = None) -> History:
    """Steps 1..len(scales) with a loss scale and skip flags (skipped_total kept consistent)."""
    run = run or run_info(FP32_MODEL, scaler="grad_scaler")
    h = healthy(run, steps)
    total = 0
    new = []
    for s, scale, skip in zip(h.steps, scales, skipped):
        total += skip
        new.append(dataclasses.replace(s, loss_scale=scale, skipped=skip, skipped_total=total,
                                       sampled=not skip))
    h.steps = new
    h.layers = [r for r in h.layers if not skipped[r.step - 1]]
    return h


def codes(findings: list) -> list[str]:
    return [f.code for f in findings]
