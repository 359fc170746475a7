"""Small models in the shapes the monitor must handle (TRELLIS #162: fp16 blocks, fp32 out_layer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import monitor
from tests.models import Fp16Blocks, backward_step, batch

__all__ = ["Fp16Blocks", "batch", "train_steps"]


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int, watcher=None, loss_mul: float = 1e-3,
                scaler=None) -> list[float]:
    losses = []
    for i in range(steps):
        x, y = batch(i)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y) * loss_mul
        if watcher is not None:
            watcher.observe_loss(loss)
        backward_step(loss, opt, scaler)
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture
def record_path(tmp_path):
    return tmp_path / "run.sqlite"


@pytest.fixture
def watched():
    """Factory: monitor.watch(...) with port=None by default, closed after the test."""
    made = []

    def make(model, opt, **kw):
        kw.setdefault("port", None)
        kw.setdefault("run", "test")
        w = monitor.watch(model, opt, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
