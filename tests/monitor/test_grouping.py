"""Per-layer series grouped by block for large jobs: exact group norms, worst layers in full, full record."""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

import monitor
from monitor.export.grouping import WORST, group_name
from monitor.record import read_record

BLOCKS = 12


class Deep(nn.Module):
    """input_layer, BLOCKS numbered blocks of two linears, out_layer: 2 + 2 * BLOCKS layers."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Linear(8, 16)
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc1": nn.Linear(16, 16), "fc2": nn.Linear(16, 16)})
                                    for _ in range(BLOCKS))
        self.out_layer = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x)
        for b in self.blocks:
            h = h + b["fc2"](torch.tanh(b["fc1"](h)))
        return self.out_layer(h)


def _one_nan(grad: torch.Tensor) -> torch.Tensor:
    out = grad.clone()
    out[0, 0] = math.nan
    return out


def _one_step(export_layers: str, record: Path, nan_layer: str | None = None) -> tuple[dict, dict[str, float]]:
    """One watched AdamW step; (scraped samples {(metric, layer): value}, raw per-layer grad norms)."""
    torch.manual_seed(0)
    model = Deep()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=0, record=record, run="g", export_layers=export_layers) as w:
        x = torch.randn(32, 8)
        if nan_layer is not None:  # backward makes one NaN in that layer's weight gradient
            model.get_submodule(nan_layer).weight.register_hook(_one_nan)
        loss = model(x).pow(2).mean()
        loss.backward()
        raw = {name: float(torch.sqrt(sum(p.grad.double().pow(2).sum() for p in m.parameters(recurse=False))))
               for name, m in model.named_modules() if list(m.parameters(recurse=False))}
        opt.step()
        text = urllib.request.urlopen(w.url, timeout=5).read().decode()
    samples = {(s.name, s.labels.get("layer", ""), s.labels.get("tensor", "")): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    return samples, raw


def _layers(samples: dict) -> set[str]:
    return {layer for name, layer, _ in samples if name == "slatmon_grad_norm"}


def test_grouped_export_is_exact_and_keeps_the_worst_layers(tmp_path: Path) -> None:
    samples, raw = _one_step("grouped", tmp_path / "r.sqlite")
    exported = _layers(samples)
    full = {n for n in exported if not n.endswith(".*")}
    worst = sorted(raw, key=raw.get, reverse=True)[:WORST]
    assert set(worst) <= full
    assert full - set(worst) <= {"input_layer", "out_layer"}  # outside numbered blocks: always by name
    assert len(exported) < len(raw)
    assert samples[("slatmon_layers_grouped", "", "")] == len(raw) - len(full)
    for group in (n for n in exported if n.endswith(".*")):
        members = [n for n in raw if group_name(n) == group and n not in full]
        want = math.sqrt(sum(raw[n] ** 2 for n in members))
        assert samples[("slatmon_grad_norm", group, "")] == pytest.approx(want, rel=1e-5), group
    history = read_record(tmp_path / "r.sqlite")
    assert {r.layer for r in history.layer_rows(1)} >= set(raw), "the record keeps every layer"


def test_a_non_finite_layer_stays_in_full_even_with_a_small_norm(tmp_path: Path) -> None:
    _, raw = _one_step("full", tmp_path / "a.sqlite")
    smallest = min((n for n in raw if n.startswith("blocks.")), key=raw.get)
    samples, _ = _one_step("grouped", tmp_path / "b.sqlite", nan_layer=smallest)
    assert samples[("slatmon_nonfinite_elements", smallest, "grad")] == 1
    assert smallest in _layers(samples)


def test_auto_groups_only_large_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    samples, raw = _one_step("auto", tmp_path / "two.sqlite")
    assert _layers(samples) == set(raw) and samples[("slatmon_layers_grouped", "", "")] == 0
    monkeypatch.setenv("WORLD_SIZE", "64")
    samples, raw = _one_step("auto", tmp_path / "{rank}.sqlite")
    assert len(_layers(samples)) < len(raw) and samples[("slatmon_layers_grouped", "", "")] > 0


def test_bad_export_layers_is_a_config_error() -> None:
    model = Deep()
    with pytest.raises(monitor.ConfigError, match="export_layers"):
        monitor.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), port=None, export_layers="some")


def test_max_layers_fit_keeps_ranges_and_small_parents_whole() -> None:
    """monitor/layer_fit.py: the deepest depth that fits, then sibling ranges one level deeper; a
    parent with few children keeps them whole, one that owns parameters itself keeps its own layer."""
    from monitor.layer_fit import ALL, fit

    owners = ["embed", *(f"blocks.{i}" for i in range(40)), "blocks", "head.0", "head.1"]
    layers = fit(owners, 10)
    assert len(set(layers.values())) <= 10
    assert layers["blocks.0"] == "blocks.[0-6]" and layers["blocks.39"] == "blocks.[35-39]"
    assert layers["blocks"] == "blocks"  # its own parameters: its own layer
    assert (layers["head.0"], layers["head.1"], layers["embed"]) == ("head.0", "head.1", "embed")
    assert fit(owners, 100) == {o: o for o in owners}  # fits: the identity
    assert set(fit(owners, 1).values()) == {ALL}
    flat = fit([str(i) for i in range(25)], 5)  # a flat ModuleList at the root
    assert sorted(set(flat.values()), key=lambda n: int(n[1:].split("-")[0])) == [
        "[0-4]", "[5-9]", "[10-14]", "[15-19]", "[20-24]"]
