"""Hostile-but-legal models and loops (issue #9, class 1): odd forward outputs, re-entrant forwards,
forwards outside any optimizer step, two optimizers, frozen parameters, a step without a backward, a
backward that raises. Each: bitwise identical to the unwatched run, no monitor error, every step seen;
a NaN batch arms localisation, so its hooks meet the same outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import monitor
from tests.models import Fp16Blocks, batch

from .runs import NAN_STEP, STEPS, assert_identical, final_state


class Raising:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


class RaisingProperty:
    @property
    def features(self) -> torch.Tensor:
        raise RuntimeError("features are not ready")


OUTPUTS: dict[str, Callable[[torch.Tensor], Any]] = {
    "sparse_coo": lambda y: y.to_sparse(),
    "sparse_csr": lambda y: y.to_sparse_csr(),
    "nested": lambda y: torch.nested.as_nested_tensor([y[:2], y[2:5]], layout=torch.jagged),
    "none": lambda y: None,
    "int": lambda y: 3,
    "generator": lambda y: (t for t in [y]),
    "attribute_raises": lambda y: Raising(),
    "property_raises": lambda y: RaisingProperty(),
    "tensor_keys": lambda y: {y: y},
    "meta": lambda y: (y, torch.empty(3, device="meta")),
    "complex": lambda y: torch.complex(y, y),
    "int_tensor": lambda y: y.detach().long(),
}


class OddOutput(nn.Module):
    """Returns `OUTPUTS[kind](y)`; the loop trains on `self.last` (= y)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        self.kind, self.last = kind, torch.empty(0)

    def forward(self, x: torch.Tensor) -> Any:
        self.last = self.body(x)
        return OUTPUTS[self.kind](self.last)


def odd_run(kind: str, watched: bool) -> tuple[dict[str, torch.Tensor], Any, dict[int, int]]:
    torch.manual_seed(0)
    model = OddOutput(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = monitor.watch(model, opt, port=None, run="hostile") if watched else None
    truth = {}
    for step in range(1, STEPS + 1):
        x, y = batch(step)
        if step == NAN_STEP:
            x = x.clone()
            x[0, 0] = float("nan")
        opt.zero_grad(set_to_none=True)
        model(x)
        truth[step] = int((~torch.isfinite(model.last)).sum())  # raw torch: the output's NaN+Inf count
        nn.functional.mse_loss(model.last, y).backward()
        opt.step()
    if w is not None:
        w.close()
    return final_state(model, opt), w, truth


@pytest.mark.parametrize("kind", OUTPUTS)
def test_odd_outputs_leave_training_identical_and_count_no_error(kind):
    plain, _, _ = odd_run(kind, watched=False)
    seen, w, truth = odd_run(kind, watched=True)
    assert_identical(plain, seen)
    assert w.counters.errors == 0 and w.counters.step == STEPS
    assert any(e.kind == "localized" for e in w.history().events) or kind not in ("sparse_coo", "meta")
    if kind in ("sparse_coo", "sparse_csr"):  # a sparse output's stored values are counted
        out = {r.step: r.activation_nonfinite for r in w.history().layers if r.layer == "[output]"}
        assert out[NAN_STEP] == truth[NAN_STEP] > 0 and out[1] == 0


class Reentrant(nn.Module):
    """Calls itself once from inside its own forward (the watched root's hooks fire twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.out = nn.Linear(16, 16), nn.Linear(16, 1)
        self.depth = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth:
            return self.inner(x)
        self.depth += 1
        try:
            x = self(x)
        finally:
            self.depth -= 1
        return self.out(torch.tanh(x))


def _eval(mode: str) -> Callable[[nn.Module], None]:
    def run(model: nn.Module) -> None:
        x = batch(99)[0]
        if mode == "no_grad":
            with torch.no_grad():
                model(x)
        elif mode == "inference_mode":
            with torch.inference_mode():
                model(x)
        else:  # eval mode with autograd on, the output dropped
            model.eval()
            model(x).sum()
            model.train()

    return run


def _loop(model: nn.Module, opts: list[torch.optim.Optimizer], variant: str) -> None:
    failed_once = False
    for step in range(1, STEPS + 1):
        x, y = batch(step)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        if variant == "backward_raises" and not failed_once:
            failed_once = True  # a backward that dies half-way (as an OOM would), caught and retried
            h = model.input_layer.weight.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("simulated OOM")))
            with pytest.raises(RuntimeError, match="simulated OOM"):
                loss.backward(retain_graph=True)
            h.remove()
        if variant != "no_backward":
            loss.backward()
        for o in opts:
            o.step()
        if variant.startswith("eval_"):
            _eval(variant.removeprefix("eval_"))(model)


VARIANTS = ["reentrant", "two_optimizers", "frozen", "extra_param", "eval_no_grad", "eval_inference_mode",
            "eval_grad_on", "no_backward", "backward_raises"]


def _setup(variant: str) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
    torch.manual_seed(0)
    model = Reentrant() if variant == "reentrant" else Fp16Blocks(torch.float32)
    params = list(model.parameters())
    if variant == "frozen":
        model.blocks[0].weight.requires_grad_(False)  # also never handed to the optimizer
        params = [p for p in params if p.requires_grad]
    if variant == "extra_param":
        params.append(nn.Parameter(torch.ones(())))  # a loss's own weight, next to the model's
    if variant == "two_optimizers":
        return model, [torch.optim.AdamW(params[:-2], lr=1e-3), torch.optim.SGD(params[-2:], lr=1e-2)]
    return model, [torch.optim.AdamW(params, lr=1e-3)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_hostile_loops_leave_training_identical_and_count_no_error(variant):
    model, opts = _setup(variant)
    _loop(model, opts, variant)
    plain = final_state(model, opts[0])
    model, opts = _setup(variant)
    watchers = [monitor.watch(model, o, port=None, run=f"hostile-{i}") for i, o in enumerate(opts)]
    _loop(model, opts, variant)
    for w in watchers:
        w.close()
    assert_identical(plain, final_state(model, opts[0]))
    assert [(w.counters.errors, w.counters.step) for w in watchers] == [(0, STEPS)] * len(opts)


def test_backward_that_raised_does_not_stop_later_gradient_captures(monkeypatch):
    """The end-of-backward callback of a backward that died never runs: the next iterations' gradients
    must still be read at the end of their backward (before clipping), not only at optimizer.step()."""
    ends: list[int] = []
    real = monitor.Watcher._backward_end
    monkeypatch.setattr(monitor.Watcher, "_backward_end", lambda self: (ends.append(self.counters.step), real(self)))
    model, opts = _setup("backward_raises")
    with monitor.watch(model, opts[0], port=None, run="hostile") as w:
        _loop(model, opts, "backward_raises")
    assert ends == list(range(STEPS)) and w.counters.errors == 0  # one per iteration, the failed one none
