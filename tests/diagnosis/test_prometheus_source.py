"""Prometheus source: a real Prometheus scraping a real watched run (TRELLIS #162 shape), read back
with `read_prometheus` / `diagnose(url)` / the CLI; plus the error paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import monitor
from monitor.errors import SourceError
from monitor.sources.prometheus import list_runs, read_prometheus
from monitor.sources.timeline import build_history
from tests.models import prometheus_with_run
from tests.realservers import free_port

from .test_cli import cli

RUN = "prom-162"


@pytest.fixture(scope="module")
def prom(module_servers, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a real Prometheus that scraped every step of a watched #162 run (3 steps)."""
    return prometheus_with_run(module_servers, tmp_path_factory.mktemp("targets"), RUN, name="diag-prom")


def test_history_from_prometheus(prom: str) -> None:
    assert (RUN, 0) in list_runs(prom)
    h = read_prometheus(prom, run=RUN)
    assert [s.step for s in h.steps][:3] == [1, 2, 3]
    assert h.run.optimizer == "AdamW" and h.run.groups[0].eps == pytest.approx(1e-8)
    assert h.run.layers["blocks.0"].dtype == "float16" and h.run.layers["out_layer"].dtype == "float32"
    step1 = {r.layer: r for r in h.layers if r.step == 1}
    assert step1["blocks.0"].param_nonfinite > 0 and step1["out_layer"].param_nonfinite == 0
    assert step1["blocks.0"].grad_nonfinite == 0


def test_diagnose_url_finds_adam_eps_underflow_at_step_1(prom: str) -> None:
    top = monitor.diagnose(prom, run=RUN)[0]
    assert (top.code, top.first_step, top.layers) == ("adam_eps_underflow", 1, ("blocks.0", "blocks.2"))


def test_cli_prometheus(prom: str) -> None:
    out = cli("--prometheus", prom, "--run", RUN, "--json")
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["findings"][0]["code"] == "adam_eps_underflow"
    out = cli("--prometheus", prom, "--run", "no-such-run")
    assert out.returncode == 2 and "not found" in out.stderr and RUN in out.stderr


def test_source_errors(prom: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot reach Prometheus"):
        read_prometheus(f"http://127.0.0.1:{free_port()}", run=RUN, timeout=2)
    with pytest.raises(SourceError, match="not found"):
        read_prometheus(prom, run="nope")
    with pytest.raises(SourceError, match="rank 7"):
        read_prometheus(prom, run=RUN, rank=7)
    for lookback in ("not-a-duration", "7d] or vector(1"):  # refused before it reaches PromQL
        with pytest.raises(SourceError, match="is not a PromQL duration"):
            read_prometheus(prom, run=RUN, lookback=lookback)


def test_not_a_prometheus() -> None:
    """A real HTTP server that is not Prometheus: a watcher's own /metrics endpoint."""
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, opt, port=0, run="not-prom") as w:
        base = w.url.rsplit("/", 1)[0]
        with pytest.raises(SourceError, match="is this a Prometheus server|API JSON"):
            read_prometheus(base, timeout=5)


# -- timeline without HTTP: sparse scrapes ---------------------------------------------------------

def sample(name: str, values: list[tuple[float, float]], **labels: str) -> tuple[dict, list]:
    return {"__name__": name, "run": "r", "rank": "0", **labels}, values


def test_sparse_scrapes_mark_all_skipped_intervals() -> None:
    series = [sample("slatmon_step", [(1, 5), (2, 10), (3, 15)]),
              sample("slatmon_skipped_steps_total", [(1, 0), (2, 5), (3, 7)]),
              sample("slatmon_loss_scale", [(1, 65536), (2, 2048), (3, 1024)]),
              sample("slatmon_grad_norm", [(1, 0.5), (2, 0.5), (3, 0.4)], layer="l")]
    h = build_history(series, "r", 0)
    assert [(s.step, s.skipped, s.skipped_total) for s in h.steps] == [(5, False, 0), (10, True, 5), (15, False, 7)]
    assert [r.step for r in h.layers] == [5, 15]  # a skipped interval has no fresh layer rows
    assert all(s.loss is None for s in h.steps)  # no slatmon_loss sample: the loss was never observed


def test_info_labels_that_changed_keep_the_last_scraped() -> None:
    """state_dtype is "none" until the optimizer makes its state at step 1; whichever order Prometheus
    returns the two series in, the one scraped last describes the layer."""
    before = sample("slatmon_layer_info", [(1, 1)], layer="l", dtype="float16", state_dtype="none")
    after = sample("slatmon_layer_info", [(2, 1), (3, 1)], layer="l", dtype="float16", state_dtype="float16")
    runs = [sample("slatmon_run_info", [(1, 1)], scaler="none"), sample("slatmon_run_info", [(3, 1)], scaler="custom")]
    for order in ([before, after, *runs], [after, before, *runs[::-1]]):
        h = build_history([sample("slatmon_step", [(1, 1), (2, 2), (3, 3)]), *order], "r", 0)
        assert h.run.layers["l"].state_dtype == "float16" and h.run.scaler == "custom"


def test_nan_loss_is_real_and_absent_loss_is_unknown() -> None:
    series = [sample("slatmon_step", [(1, 1), (2, 2), (3, 3)]), sample("slatmon_loss", [(1, math.nan), (2, 0.5)])]
    h = build_history(series, "r", 0)
    assert math.isnan(h.steps[0].loss) and h.steps[1].loss == 0.5 and h.steps[2].loss is None


def test_sampled_step_places_layer_rows_and_skips() -> None:
    """every=2: the per-layer series describe step 3 in the scrapes after steps 3 and 4 (4 was skipped)."""
    series = [sample("slatmon_step", [(1, 3), (2, 4), (3, 5)]),
              sample("slatmon_sampled_step", [(1, 3), (2, 3), (3, 5)]),
              sample("slatmon_skipped_steps_total", [(1, 0), (2, 1), (3, 1)]),
              sample("slatmon_loss", [(1, 0.5), (2, math.nan), (3, 0.4)]),
              sample("slatmon_grad_norm", [(1, 0.5), (2, 0.5), (3, 0.4)], layer="l")]
    h = build_history(series, "r", 0)
    assert [(s.step, s.sampled, s.skipped) for s in h.steps] == [(3, True, False), (4, False, True), (5, True, False)]
    assert [r.step for r in h.layers] == [3, 5]
    assert math.isnan(h.steps[1].loss) and h.steps[2].loss == 0.4


def test_odd_values_do_not_break_the_timeline() -> None:
    series = [sample("slatmon_step", [(1, 1), (2, math.nan), (3, 3), (4, 2)]),
              sample("slatmon_skipped_steps_total", [(1, math.nan), (3, math.inf)]),
              sample("slatmon_nonfinite_elements", [(1, math.nan), (3, 5)], layer="l", tensor="grad"),
              sample("slatmon_finding", [(3, 1)], code="adam_eps_underflow", severity="critical")]
    h = build_history(series, "r", 0)
    assert [s.step for s in h.steps] == [1, 3]  # NaN step dropped, step going backwards dropped
    assert h.preflight[0].code == "adam_eps_underflow" and h.preflight[0].first_step == 3
    monitor.diagnosis.run_rules(h)


def test_coarser_prometheus_view_says_so() -> None:
    from monitor.diagnosis import coarser_view
    from monitor.findings import Finding

    series = [sample("slatmon_step", [(1, 5), (2, 10)]), sample("slatmon_grad_norm", [(1, 0.5), (2, 0.4)], layer="l")]
    f = coarser_view(Finding("x", "warning", "t", ("e",), 5), build_history(series, "r", 0))
    assert f.evidence[0] == "e" and f.evidence[1].startswith("Prometheus view: 2 of 10 steps were scraped")
