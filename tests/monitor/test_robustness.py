"""Bad arguments are clear errors; an error inside the monitor is counted and never reaches training."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import monitor

from .conftest import Fp16Blocks, train_steps


@pytest.mark.parametrize("kwargs,match", [
    ({"model": "not a model"}, r"model must be a torch.nn.Module, got 'str'"),
    ({"optimizer": object()}, r"optimizer must be a torch.optim.Optimizer"),
    ({"every": 0}, r"every must be an integer >= 1"),
    ({"every": 1.5}, r"every must be an integer >= 1"),
    ({"port": 70000}, r"port must be an integer 0-65535"),
    ({"scaler": object()}, r"scaler must be a torch.amp.GradScaler"),
    ({"loss_scale": 2.0}, r"loss_scale must be a callable"),
    ({"scaler": torch.amp.GradScaler("cpu"), "loss_scale": lambda: 1.0}, r"not both"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    model = Fp16Blocks(torch.float32)
    args = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "port": None, **kwargs}
    with pytest.raises(monitor.ConfigError, match=match):
        monitor.watch(**args)


def test_optimizer_of_another_model_is_rejected():
    model, other = Fp16Blocks(torch.float32), nn.Linear(3, 3)
    with pytest.raises(monitor.ConfigError, match=r"optimizer's parameters are not model's"):
        monitor.watch(model, torch.optim.SGD(other.parameters(), lr=0.1), port=None)


def test_disabled_scaler_is_documented_as_no_loss_scaling(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watched(model, opt, scaler=torch.amp.GradScaler("cpu", enabled=False))
    assert w.info.scaler == "disabled" and w.counters.loss_scale == 1.0


def test_monitor_errors_are_counted_logged_once_and_swallowed(watched, caplog):
    calls = {"n": 0}

    def flaky_scale() -> float:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("scale source went away")
        return 1.0

    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = watched(model, opt, loss_scale=flaky_scale)
    with caplog.at_level(logging.ERROR, logger="monitor"):
        losses = train_steps(model, opt, 5, w)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert w.counters.errors >= 3
    assert sum("error inside the monitor" in r.getMessage() for r in caplog.records) == 1


def test_refused_record_leaves_the_scaler_and_optimizer_untouched(tmp_path):
    path = tmp_path / "taken.sqlite"
    path.write_bytes(b"someone else's file")
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(monitor.ConfigError, match="already exists"):
        monitor.watch(model, opt, scaler=scaler, port=None, record=path)
    assert "update" not in vars(scaler) and not opt._optimizer_step_pre_hooks and not model._forward_hooks
    assert path.read_bytes() == b"someone else's file"
