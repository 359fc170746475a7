"""update_ratio against raw torch: ||p_after - p_before|| / ||p_before|| per layer, computed without the monitor.

Small tensors are measured exactly; large ones through a strided sketch (monitor/probes/sketch.py),
which must stay close to the exact ratio for real optimizer updates.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import monitor
from monitor.probes import sketch_view
from monitor.probes.sketch import SKETCH_ELEMENTS


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    # 0: 1024x1024 (sketched), 2: 16x1024 (exact), 4: an odd-sized 4099x16 (sketched, with a tail)
    return nn.Sequential(nn.Linear(1024, 1024), nn.GELU(), nn.Linear(1024, 16), nn.Tanh(),
                         nn.Linear(16, 4099))


def _true_ratios(model: nn.Module, make_opt, steps: int) -> list[dict[str, float]]:
    """Per layer and step, from plain torch: the truth the monitor's rows are compared with."""
    opt = make_opt(model)
    x = torch.randn(32, 1024, generator=torch.Generator().manual_seed(1))
    out = []
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        per_layer: dict[str, list[float]] = {}
        for n, p in model.named_parameters():
            layer = n.rsplit(".", 1)[0]
            per_layer.setdefault(layer, [0.0, 0.0])
            per_layer[layer][0] += float((p.detach() - before[n]).double().pow(2).sum())
            per_layer[layer][1] += float(before[n].double().pow(2).sum())
        out.append({k: math.sqrt(u / b) for k, (u, b) in per_layer.items()})
    return out


def _watched_ratios(model: nn.Module, make_opt, steps: int) -> list[dict[str, float]]:
    opt = make_opt(model)
    x = torch.randn(32, 1024, generator=torch.Generator().manual_seed(1))
    with monitor.watch(model, opt, port=None) as w:
        for _ in range(steps):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        rows = w.history().layers
    out: list[dict[str, float]] = [{} for _ in range(steps)]
    for r in rows:
        if r.update_ratio is not None:
            out[r.step - 1][r.layer] = r.update_ratio
    return out


@pytest.mark.parametrize("make_opt", [
    lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
    lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
], ids=["adamw", "sgd-momentum"])
def test_update_ratio_matches_raw_torch(make_opt):
    steps = 4
    truth = _true_ratios(_model(), make_opt, steps)
    got = _watched_ratios(_model(), make_opt, steps)
    for t, g in zip(truth, got, strict=True):
        assert set(g) == set(t)
        assert g["2"] == pytest.approx(t["2"], rel=1e-4)  # small layer: measured exactly
        for layer in ("0", "4"):  # sketched layers: an estimate, close to the truth
            assert g[layer] == pytest.approx(t[layer], rel=0.03), layer


def test_sketch_view_shares_memory_and_covers_evenly():
    t = torch.arange(10 * SKETCH_ELEMENTS, dtype=torch.float32)
    view, factor = sketch_view(t)
    assert view.data_ptr() == t.data_ptr() and view.numel() <= SKETCH_ELEMENTS
    assert factor == pytest.approx(t.numel() / view.numel())
    assert float(view.max()) > 0.9 * t.numel()  # spread over the whole tensor, not a prefix
    small = torch.ones(SKETCH_ELEMENTS)
    assert sketch_view(small)[0] is small and sketch_view(small)[1] == 1.0
    strided = torch.ones(4 * SKETCH_ELEMENTS, 2).t()
    assert sketch_view(strided)[0] is strided  # not contiguous: measured exactly

