"""The two per-layer signals of a sampled step against raw torch computed beside the monitor: the share of
16-bit weight elements an update left exactly unchanged, and Adam's RMS(g^2 / v_hat) (second-moment lag)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import monitor
from monitor.probes import moment_lag


class TwoLayers(nn.Module):
    """A small layer (exact) and a 256x256 one (above the 32K-element sketch threshold)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.small = nn.Linear(16, 256)
        self.big = nn.Linear(256, 256)
        self.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.big(torch.tanh(self.small(x)))


def raw_rms(opt: torch.optim.Optimizer, module: nn.Module, grads: dict[int, torch.Tensor]) -> float:
    """RMS over the module's elements of g^2 / max(v / (1 - beta2^t), eps^2), from the optimizer state
    after step() and the unscaled gradients `grads` (by id of the parameter): per-tensor torch, no
    monitor code."""
    total, n = 0.0, 0
    for group in opt.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            if not any(p is q for q in module.parameters()):
                continue
            state = opt.state[p]
            v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
            v_hat = v.double() / (1 - beta2 ** float(state["step"]))
            g = grads[id(p)].double()
            total += float((g * g / v_hat.clamp_min(eps * eps)).sum())
            n += p.numel()
    return math.sqrt(total / n)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, scaler: torch.amp.GradScaler | None = None,
          check=None, dtype: torch.dtype = torch.float32) -> monitor.Watcher:
    gen = torch.Generator().manual_seed(1)
    with monitor.watch(model, opt, scaler=scaler, port=None) as w:
        for step in range(1, steps + 1):
            x = torch.randn(32, 16, generator=gen).to(dtype) * (1 + step)  # growing gradients: ratio away from 1
            opt.zero_grad(set_to_none=True)
            loss = model(x).float().pow(2).mean()
            w.observe_loss(loss)
            (loss if scaler is None else scaler.scale(loss)).backward()
            scale = 1.0 if scaler is None else scaler.get_scale()
            grads = {id(p): p.grad.detach() / scale for p in model.parameters()}  # unscaled copies
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            if check is not None:
                check(step, w, grads)
    return w


def rows(w: monitor.Watcher, step: int) -> dict[str, object]:
    return {r.layer: r for r in w.history().layers if r.step == step}


@pytest.mark.parametrize("kind", ["foreach", "fused", "amsgrad", "fused+GradScaler"])
def test_rms_ratio_equals_raw_torch(kind: str) -> None:
    torch.manual_seed(0)
    model = TwoLayers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=kind.startswith("fused") or None,
                            amsgrad=kind == "amsgrad")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if "GradScaler" in kind else None
    seen: list[tuple[float, float, float, float]] = []

    def check(step: int, w: monitor.Watcher, grads: dict[int, torch.Tensor]) -> None:
        r = rows(w, step)
        seen.append((r["small"].adam_rms_ratio, raw_rms(opt, model.small, grads),
                     r["big"].adam_rms_ratio, raw_rms(opt, model.big, grads)))

    train(model, opt, 4, scaler, check)
    assert len(seen) == 4
    for small, small_raw, big, big_raw in seen:
        assert small == pytest.approx(small_raw, rel=1e-4)  # exact below the sketch threshold
        assert big == pytest.approx(big_raw, rel=0.1)  # the 65K-element weight: on the sketch
    assert seen[0][1] == pytest.approx(1.0, rel=1e-3)  # step 1: v_hat = g^2 exactly (eps aside)
    assert max(s[1] for s in seen[1:]) > 1.05  # the growing input makes it move: not a constant


def test_rms_device_bias_correction_matches_host() -> None:
    """The path for step counts kept on the device (fused / capturable on a GPU) gives the host formula."""
    g = [torch.randn(50), torch.randn(7)]
    v = [torch.rand(50), torch.rand(7) * 1e-20]  # the second one below eps^2: clamped
    host = moment_lag._ratios([(g[0], v[0], 3.0), (g[1], v[1], 10.0)], 0.999, 1e-8)
    device = moment_lag._ratios([(g[0], v[0], torch.tensor(3.0)), (g[1], v[1], torch.tensor(10.0))], 0.999, 1e-8,
                                device_steps=True)
    for a, b in zip(host, device):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(host[1], g[1] ** 2 / 1e-16)


def test_sgd_has_no_rms_ratio() -> None:
    torch.manual_seed(0)
    model = TwoLayers()
    w = train(model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9), 2)
    assert all(r.adam_rms_ratio is None for r in w.history().layers)


def test_unchanged_share_equals_raw_torch_for_bf16() -> None:
    """bf16 weights, an lr around their resolution: the share of elements unchanged by each step, per layer
    (torch.equal-style comparison of copies taken by the test), exact for the small layer, on the sketch
    for the big one; fp32 layers carry no value."""
    torch.manual_seed(0)
    model = TwoLayers(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    before: dict[str, list[torch.Tensor]] = {}
    seen = []

    def snapshot() -> None:
        before.update({name: [p.detach().clone() for p in m.parameters()]
                       for name, m in (("small", model.small), ("big", model.big))})

    def check(step: int, w: monitor.Watcher, _: dict) -> None:
        r = rows(w, step)
        for name, m in (("small", model.small), ("big", model.big)):
            same = sum(int((a == b).sum()) for a, b in zip(before[name], m.parameters()))
            seen.append((name, r[name].update_unchanged_ratio, same / sum(p.numel() for p in m.parameters())))
        snapshot()

    snapshot()
    train(model, opt, 3, check=check, dtype=torch.bfloat16)
    small = [t for name, _, t in seen if name == "small"]
    assert min(small) > 0.05 and max(small) < 0.95  # neither everything nor nothing rounds away here
    assert max(t for name, _, t in seen if name == "big") > 0.1
    for name, measured, truth in seen:
        assert measured == pytest.approx(truth, abs=1e-9 if name == "small" else 0.05), name

    torch.manual_seed(0)
    fp32 = TwoLayers()
    w = train(fp32, torch.optim.AdamW(fp32.parameters(), lr=2e-4), 1)
    assert all(r.update_unchanged_ratio is None for r in w.history().layers)


def test_without_the_update_ratio_the_rms_remains_and_nothing_breaks() -> None:
    """update_ratio=False: no copies, so no unchanged share; the rest of the sampled step is whole."""
    torch.manual_seed(0)
    model = TwoLayers(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=None, update_ratio=False) as w:
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(8, 16, dtype=torch.bfloat16)).float().pow(2).mean().backward()
            opt.step()
    assert w.counters.errors == 0
    layer_rows = [r for r in w.history().layers if r.layer in ("small", "big")]
    assert len(layer_rows) == 4 and all(r.update_unchanged_ratio is None for r in layer_rows)
    assert all(r.adam_rms_ratio is not None and r.grad_norm is not None for r in layer_rows)
