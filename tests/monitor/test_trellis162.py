"""TRELLIS #162 reproduced: AdamW straight on fp16 parameters turns them non-finite after one step."""

from __future__ import annotations

import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import monitor
from monitor.record import read_record

from .conftest import Fp16Blocks, train_steps

FP16_LAYERS = {"blocks.0", "blocks.2"}
FP32_LAYERS = {"input_layer", "out_layer"}


def scrape(url: str) -> list:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return [s for fam in text_string_to_metric_families(body) for s in fam.samples]


def nonfinite_params(samples) -> dict[str, float]:
    return {s.labels["layer"]: s.value for s in samples
            if s.name == "slatmon_nonfinite_elements" and s.labels["tensor"] == "param"}


def test_one_step_nonfinite_in_fp16_layers_only(record_path, watched):
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    w = watched(model, opt, port=0, record=record_path)
    train_steps(model, opt, 1, w)

    nf = nonfinite_params(scrape(w.url))
    assert all(nf[layer] > 0 for layer in FP16_LAYERS), nf
    assert all(nf[layer] == 0 for layer in FP32_LAYERS), nf
    w.close()

    h = read_record(record_path)
    rows = {r.layer: r for r in h.layer_rows(1)}
    for layer in FP16_LAYERS:
        assert rows[layer].param_nonfinite > 0
        assert rows[layer].grad_nonfinite == 0  # the gradients were finite: the update broke it
        assert rows[layer].state_zero_ratio == pytest.approx(1.0, abs=0.02)
    for layer in FP32_LAYERS:
        assert rows[layer].param_nonfinite == 0
        assert rows[layer].state_zero_ratio < 0.5
    assert h.run.layers["blocks.0"].dtype == "float16"
    assert h.run.layers["blocks.0"].state_dtype == "float16"
    assert h.run.layers["out_layer"].dtype == "float32"
    first = [e for e in h.events if e.kind == "nonfinite" and e.tensor == "param"]
    assert first and first[0].step == 1 and first[0].layer in FP16_LAYERS


def test_preflight_flags_eps_before_the_first_step(watched):
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    w = watched(model, opt)
    codes = [f.code for f in w.findings()]
    assert "adam_eps_underflow" in codes
    f = next(f for f in w.findings() if f.code == "adam_eps_underflow")
    assert f.first_step == 0
    assert set(f.layers) >= FP16_LAYERS and not set(f.layers) & FP32_LAYERS


def test_eps_1e4_stays_finite(record_path, watched):
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)
    w = watched(model, opt, record=record_path)
    train_steps(model, opt, 3, w)
    w.close()
    h = read_record(record_path)
    assert [s.step for s in h.steps] == [1, 2, 3]
    assert all(s.param_nonfinite == 0 and s.grad_nonfinite == 0 for s in h.steps)
    assert not [e for e in h.events if e.kind == "nonfinite"]


def test_diagnose_reads_the_record(record_path, watched):
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    w = watched(model, opt, record=record_path)
    train_steps(model, opt, 2, w)
    w.close()
    codes = [f.code for f in monitor.diagnose(str(record_path))]
    assert "adam_eps_underflow" in codes
