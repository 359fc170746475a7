"""Scale (issue #9): 10,000 parameter tensors keep useful layers and exact non-finite names; the scrape
never runs the diagnosis, survives our own bugs (200, counted) and never reports health it cannot vouch for.

Ground truth comes from raw torch: gradients and parameters read around the optimizer step, without the
monitor. The 10,000-tensor run is shared by its tests (module fixture: two steps of tiny tensors).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

import monitor
from monitor.diagnosis import engine
from monitor.export import prepare
from monitor.export.prometheus import SnapshotCollector
from tests.models import Fp16Blocks, watched_step

MODULES = 5000  # x (weight, bias) = 10,000 tensors
BAD = 3217  # the module whose bias gradient gets one NaN at step 2


class Wide(nn.Module):
    """`layers.0` ... `layers.4999`, each a Linear(2, 2): 10,000 tiny parameter tensors under one parent."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(MODULES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.layers]).sum(0)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        body = r.read().decode()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("run", "rank")))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def codes(samples: dict) -> set[str]:
    return {dict(k)["code"] for (name, k) in samples if name == "slatmon_finding"}


@dataclass
class WideRun:
    w: monitor.Watcher
    model: Wide
    grads: dict[int, dict[str, torch.Tensor]]  # step -> parameter name -> gradient the optimizer received
    before: dict[str, torch.Tensor]  # step 1: parameters before the update
    after: dict[str, torch.Tensor]  # step 1: ... and after it
    log: str
    samples: dict


@pytest.fixture(scope="module")
def wide() -> Iterator[WideRun]:
    torch.manual_seed(0)
    model = Wide()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    handler = _Capture()
    logging.getLogger("monitor").addHandler(handler)
    try:
        w = monitor.watch(model, opt, port=0, run="wide")  # default max_layers
    finally:
        logging.getLogger("monitor").removeHandler(handler)
    x = torch.randn(3, 2)
    grads, before, after = {}, {}, {}
    for step in (1, 2):
        opt.zero_grad()
        if step == 2:  # backward leaves one NaN in that bias gradient
            model.layers[BAD].bias.register_hook(lambda g: g.index_fill(0, torch.tensor([1]), math.nan))
        loss = model(x).pow(2).mean()
        w.observe_loss(loss)
        loss.backward()
        grads[step] = {n: p.grad.clone() for n, p in model.named_parameters()}
        if step == 1:
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        if step == 1:
            after = {n: p.detach().clone() for n, p in model.named_parameters()}
    samples = scrape(w.url)
    yield WideRun(w, model, grads, before, after, "\n".join(handler.lines), samples)
    w.close()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _members(layer: str) -> list[int]:
    """Module indices inside a layer name: `layers.[10-19]` -> 10..19, `layers.7` -> [7]."""
    tail = layer.split(".", 1)[1]
    if tail.startswith("["):
        lo, hi = tail.strip("[]").split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(tail)]


def test_10k_tensors_keep_useful_layers_and_say_what_was_grouped(wide: WideRun) -> None:
    names = wide.w.layers.names
    assert 100 <= len(names) <= 512, len(names)  # not one layer named "layers"
    covered = [i for name in names for i in _members(name)]
    assert covered == list(range(MODULES)), "every module in exactly one layer, in model order"
    assert max(len(_members(n)) for n in names) <= 10
    assert sum(li.modules for li in wide.w.info.layers.values()) == MODULES  # the run info says it
    assert "5000 modules" in wide.log and "max_layers=512" in wide.log and "layers.[0-9]" in wide.log
    assert value(wide.samples, "slatmon_layers_grouped") == MODULES
    exported = {dict(k)["layer"] for (name, k) in wide.samples if name == "slatmon_grad_norm"}
    assert exported == set(names)


def test_grouped_numbers_equal_raw_torch(wide: WideRun) -> None:
    """Per-layer gradient norms and update ratios of step 1 (small tensors take the packed path)."""
    rows = {r.layer: r for r in wide.w.history().layer_rows(1)}
    for name in wide.w.layers.names[::37]:
        params = [f"layers.{i}.{k}" for i in _members(name) for k in ("weight", "bias")]
        grad = math.sqrt(sum(float(wide.grads[1][p].double().pow(2).sum()) for p in params))
        update = math.sqrt(sum(float((wide.after[p] - wide.before[p]).double().pow(2).sum()) for p in params))
        norm = math.sqrt(sum(float(wide.before[p].double().pow(2).sum()) for p in params))
        assert rows[name].grad_norm == pytest.approx(grad, rel=1e-5), name
        assert rows[name].update_ratio == pytest.approx(update / norm, rel=1e-4), name
        assert rows[name].grad_nonfinite == 0


def test_a_nan_in_one_of_10k_tensors_is_named_exactly(wide: WideRun) -> None:
    [event] = [e for e in wide.w.history().events if e.kind == "nonfinite" and e.tensor == "grad"]
    group = next(n for n in wide.w.layers.names if BAD in _members(n))
    assert group != f"layers.{BAD}"  # the layer is a group ...
    assert (event.step, event.layer) == (2, f"layers.{BAD}")  # ... the event names the module
    assert event.detail["parameter"] == f"layers.{BAD}.bias" and event.detail["group"] == group
    bad = {r.layer: r.grad_nonfinite for r in wide.w.history().layer_rows(2) if r.grad_nonfinite}
    assert bad == {group: 1}
    assert value(wide.samples, "slatmon_nonfinite_elements", layer=group, tensor="grad") == 1
    found = [f for f in wide.w.findings() if f.first_step == 2 and f"layers.{BAD}" in f.layers]
    assert found, [(f.code, f.layers) for f in wide.w.findings()]


@pytest.fixture
def small() -> Iterator[tuple[monitor.Watcher, nn.Module, torch.optim.Optimizer]]:
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = monitor.watch(model, opt, port=0, run="small")
    yield w, model, opt
    w.close()


def test_a_rule_that_raises_answers_200_counted_and_not_healthy(small, monkeypatch: pytest.MonkeyPatch) -> None:
    w, model, opt = small

    def boom(history):
        raise RuntimeError("rule bug")

    monkeypatch.setattr(engine, "RULES", (*engine.RULES, ("boom", boom)))
    watched_step(model, opt, w, 1)
    samples = scrape(w.url)
    assert "diagnosis_incomplete" in codes(samples)  # no finding would otherwise read as healthy
    assert value(samples, "slatmon_monitor_errors_total") >= 1
    assert value(samples, "slatmon_step") == 1 and w.counters.errors == 0  # training's own hooks were fine


def test_a_failing_diagnosis_keeps_the_last_findings(small, monkeypatch: pytest.MonkeyPatch) -> None:
    w, model, opt = small
    watched_step(model, opt, w, 1)
    model.out_layer.bias.data[0] = math.nan  # parameters non-finite: a critical finding at step 2
    watched_step(model, opt, w, 2)
    good = codes(scrape(w.url))
    assert any(c != "diagnosis_incomplete" for c in good)

    def broken(*args, **kwargs):
        raise MemoryError("history too large")

    monkeypatch.setattr("monitor.diagnosis.run_rules", broken)
    watched_step(model, opt, w, 3)
    samples = scrape(w.url)
    assert codes(samples) == good | {"diagnosis_incomplete"}
    assert value(samples, "slatmon_monitor_errors_total") >= 1 and w.counters.background_errors >= 1


def test_a_family_that_fails_to_build_leaves_the_rest_served(small, monkeypatch: pytest.MonkeyPatch) -> None:
    w, model, opt = small

    def broken(self, snap, base):
        raise ValueError("family bug")

    monkeypatch.setattr(SnapshotCollector, "_optimizer", broken)
    watched_step(model, opt, w, 1)
    samples = scrape(w.url)
    assert value(samples, "slatmon_step") == 1 and value(samples, "slatmon_grad_norm", layer="out_layer")
    assert not [k for k in samples if k[0] == "slatmon_optimizer_lr"]
    assert value(samples, "slatmon_monitor_errors_total") >= 1


def test_the_scrape_never_runs_the_rules(small, monkeypatch: pytest.MonkeyPatch) -> None:
    w, model, opt = small
    threads: list[str] = []

    def spy(history):
        threads.append(threading.current_thread().name)
        return []

    monkeypatch.setattr(engine, "RULES", (*engine.RULES, ("spy", spy)))
    for step in range(1, 4):
        watched_step(model, opt, w, step)
        scrape(w.url)
    assert threads and set(threads) == {"slatmon-prepare"}, threads


def test_stale_findings_never_read_healthy_after_a_nan(small, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow diagnosis (large models) is not waited for: the scrape answers from the previous state, and
    a NaN seen since then turns into diagnosis_incomplete until the real findings arrive."""
    w, model, opt = small
    monkeypatch.setattr(prepare, "QUICK_S", 0.0)  # every preparation counts as slow: scrapes never wait
    watched_step(model, opt, w, 1)
    assert "diagnosis_incomplete" not in codes(scrape(w.url))  # the first scrape waits: healthy run
    model.out_layer.weight.register_hook(lambda g: torch.full_like(g, math.nan))
    watched_step(model, opt, w, 2)
    stale = scrape(w.url)
    assert value(stale, "slatmon_sampled_step") == 1  # served from the previous preparation ...
    assert "diagnosis_incomplete" in codes(stale)  # ... but it does not claim health
    w.findings()  # the training thread's own diagnosis (exact) leaves the scrape path alone
    fresh = prepare_and_scrape(w.url)
    assert value(fresh, "slatmon_sampled_step") == 2 and "diagnosis_incomplete" not in codes(fresh)
    assert {c for c in codes(fresh)} & {"nonfinite_values", "grad_overflow_no_scaler", "nonfinite_after_update"}


def prepare_and_scrape(url: str, tries: int = 50) -> dict:
    """Scrape until the preparation the first scrape triggered is served (no wall-clock assertion)."""
    import time

    for _ in range(tries):
        samples = scrape(url)
        if "diagnosis_incomplete" not in codes(samples) and value(samples, "slatmon_sampled_step") == 2:
            return samples
        time.sleep(0.1)
    return samples


def test_a_slow_preparation_is_timed_for_the_next_scrape() -> None:
    """Pure scheduling (export/prepare.py next_start): scrapes every 5 s and a 0.4 s per-layer build
    start the next preparation 1.5 x 0.4 + 0.5 s ahead of the next scrape, whatever the rules cost."""
    state = prepare.Prepared(version=1, snapshot=None, layers=[], findings=[], findings_version=1, failed=None,
                             mark=0, layer_seconds=0.4, rules_seconds=1.0, rules_done=8.0)
    assert prepare.next_start([0.0, 5.0], state) is None  # no rhythm yet
    assert prepare.next_start([0.0, 5.0, 10.0], state) == pytest.approx(15.0 - 1.5 * 0.4 - 0.5)
    assert prepare.next_start([0.0, 5.0, 10.0], dataclasses.replace(state, rules_seconds=30.0)) == (
        prepare.next_start([0.0, 5.0, 10.0], state))
    assert prepare.next_start([0.0, 4.0, 10.0, 15.0], state) == pytest.approx(20.0 - 1.5 * 0.4 - 0.5)
