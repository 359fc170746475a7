"""The /metrics endpoint, scraped over real HTTP: every contract metric with its documented labels."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import monitor

from .conftest import Fp16Blocks, train_steps

CONTRACT = ["slatmon_step", "slatmon_loss", "slatmon_loss_scale", "slatmon_skipped_steps_total",
            "slatmon_grad_norm", "slatmon_grad_norm_global", "slatmon_param_norm", "slatmon_update_ratio",
            "slatmon_nonfinite_elements", "slatmon_nonfinite_steps_total", "slatmon_zero_grad_ratio",
            "slatmon_adam_state_zero_ratio", "slatmon_optimizer_lr", "slatmon_optimizer_eps",
            "slatmon_layer_info", "slatmon_finding", "slatmon_last_step_timestamp_seconds",
            "slatmon_monitor_seconds_total", "slatmon_monitor_errors_total"]
PER_LAYER = {"slatmon_grad_norm", "slatmon_param_norm", "slatmon_update_ratio", "slatmon_nonfinite_elements",
             "slatmon_zero_grad_ratio", "slatmon_adam_state_zero_ratio", "slatmon_layer_info"}


def scrape(url: str):
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return [s for fam in text_string_to_metric_families(body) for s in fam.samples]


def test_every_contract_metric_with_labels(watched):
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW([{"params": model.blocks.parameters(), "lr": 1e-4},
                             {"params": list(model.input_layer.parameters()) + list(model.out_layer.parameters()),
                              "lr": 3e-4}], eps=1e-8)
    w = watched(model, opt, port=0, run="exp-1", rank=3)
    assert w.url.startswith("http://127.0.0.1:")
    train_steps(model, opt, 2, w)
    samples = scrape(w.url)
    names = {s.name for s in samples}
    assert not [n for n in CONTRACT if n not in names]
    for s in samples:
        if s.name.startswith("slatmon_"):
            assert s.labels["run"] == "exp-1" and s.labels["rank"] == "3", s
            if s.name in PER_LAYER:
                assert s.labels["layer"], s
    by = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    assert by[("slatmon_step", (("rank", "3"), ("run", "exp-1")))] == 2
    lrs = {s.labels["group"]: s.value for s in samples if s.name == "slatmon_optimizer_lr"}
    assert lrs == {"0": pytest.approx(1e-4), "1": pytest.approx(3e-4)}
    info = {s.labels["layer"]: (s.labels["dtype"], s.labels["state_dtype"]) for s in samples
            if s.name == "slatmon_layer_info"}
    assert info["blocks.0"] == ("float16", "float16") and info["out_layer"] == ("float32", "float32")
    tensors = {s.labels["tensor"] for s in samples if s.name == "slatmon_nonfinite_steps_total"}
    assert tensors == {"grad", "param", "activation"}
    run_info = [s.labels for s in samples if s.name == "slatmon_run_info"]
    assert len(run_info) == 1 and run_info[0]["scaler"] == "none" and run_info[0]["optimizer"] == "AdamW"
    assert run_info[0]["fused"] == "false" and run_info[0]["master_weights"] == "false"
    codes = {s.labels["code"] for s in samples if s.name == "slatmon_finding"}
    assert "adam_eps_underflow" in codes


def test_busy_port_is_a_clear_error(watched, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        model = Fp16Blocks(torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(monitor.ConfigError, match=rf"127\.0\.0\.1:{port}.*port=0"):
            watched(model, opt, port=port, record=tmp_path / "r.sqlite")
        assert list(tmp_path.iterdir()) == []  # no empty record left behind
        assert not opt._optimizer_step_pre_hooks and not model._forward_hooks


def test_endpoint_stops_on_close(watched):
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watched(model, opt, port=0)
    url = w.url
    scrape(url)
    w.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_cardinality_cap_groups_layers(watched):
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
                                  for _ in range(12)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watched(model, opt, max_layers=12)
    assert len(w.layers.names) == 12 and w.layers.names[0] == "0"
    w2 = watched(model, opt, group_depth=1, run="grouped")
    assert w2.layers.names == tuple(str(i) for i in range(12))
    train_steps_seq(model, opt, w)
    rows = [r for r in w.history().layer_rows(1) if r.layer != "[output]"]
    assert len(rows) == 12 and all(r.grad_norm is not None for r in rows)


def train_steps_seq(model, opt, w):
    loss = model(torch.randn(3, 4)).sum()
    w.observe_loss(loss)
    loss.backward()
    opt.step()
