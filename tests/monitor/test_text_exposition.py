"""The endpoint's own text rendering against prometheus_client's, over the same collector."""

from __future__ import annotations

import math
import urllib.request

import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from monitor.export.prometheus import SnapshotCollector
from monitor.export.text import Family, render


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_render_escapes_labels_and_special_values_like_prometheus_client():
    fam = Family("slatmon_grad_norm", "gauge", 'doc with "quotes" and \\', ("run", "layer"))
    for i, v in enumerate([1.5, math.nan, math.inf, -math.inf, 1e-300, 123456789.0]):
        fam.add(('r"1', f'layer\\{i}\n"x"'), v)
    counter = Family("slatmon_skipped_steps", "counter", "skips", ("run",), [(("r",), 3.0)])
    text = render([fam, counter]).decode()
    registry = CollectorRegistry(auto_describe=False)

    class Fixed:
        def collect(self):
            return SnapshotCollector.collect(self)  # type: ignore[arg-type]

        def families(self):
            return [fam, counter]

    registry.register(Fixed())  # type: ignore[arg-type]
    assert _same(_samples(text), _samples(generate_latest(registry).decode()))
    assert "slatmon_skipped_steps_total 3.0" in text.replace('{run="r"}', "")


def test_endpoint_matches_prometheus_client_and_follows_new_snapshots(watched):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = watched(model, opt, port=0, run="text-1")
    x = torch.randn(3, 4)

    def step() -> None:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    step()
    registry = CollectorRegistry(auto_describe=False)
    tracker = w.tracker
    SnapshotCollector(lambda: tracker.snapshot, lambda: w.counters, lambda: tracker.findings(w.info, w.preflight),
                      lambda: w.info, registry, events=tracker.events)
    for _ in range(2):  # the second scrape and step reuse / refresh the per-layer cache
        body = urllib.request.urlopen(w.url, timeout=5).read().decode()
        got, want = _samples(body), _samples(generate_latest(registry).decode())
        assert _same(got, want)
        norms = {k: v for k, v in got.items() if k[0] == "slatmon_grad_norm"}
        assert len(norms) == 2 and all(v > 0 for v in norms.values())
        step()
    before = _samples(urllib.request.urlopen(w.url, timeout=5).read().decode())
    step()
    after = _samples(urllib.request.urlopen(w.url, timeout=5).read().decode())
    key = next(k for k in after if k[0] == "slatmon_param_norm")
    assert after[key] != before[key]  # a new sampled step: the cached per-layer text was replaced
