"""Export-cost and detection-latency benchmarks on tiny sizes, against real Prometheus/Alertmanager."""

from __future__ import annotations

import pytest

from bench import detection, export_cost


def test_scrape_cost_counts_series_per_layer():
    small, large = export_cost.scrape_cost(5, repeats=2), export_cost.scrape_cost(50, repeats=2)
    assert small["scrape_ms"] > 0 and small["cached_ms"] > 0 and large["body_bytes"] > small["body_bytes"]
    per_layer = (large["series"] - small["series"]) / 45  # global series cancel out
    assert per_layer == int(per_layer) and per_layer >= 5  # grad/param norms, ratios, nonfinite, info


def test_record_grows_with_sampled_steps(tmp_path):
    every1 = export_cost.record_size(200, 1, 20, tmp_path)  # enough steps to outgrow the first pages
    every10 = export_cost.record_size(200, 10, 20, tmp_path)
    assert every1["bytes"] > every10["bytes"] > 0


@pytest.mark.slow
def test_dashboard_queries_read_the_backfilled_run(tmp_path):
    rows = export_cost.dashboard_queries(layers=4, steps=600, interval=5, tmp=tmp_path, repeats=1)
    assert len(rows) == len(export_cost._dashboard_exprs()) >= 10
    by_panel = {r["panel"]: r for r in rows}
    # range panels over backfilled series return points: the blocks were loaded and the labels match
    for panel in ("Loss", "Gradient norm per layer (top 10)", "Update ratio per layer (top 10)"):
        assert by_panel[panel]["points"] >= 100, panel


@pytest.mark.slow
def test_detection_sees_the_nan_at_its_step_and_pages(tmp_path):
    r = detection.measure(interval="1s", every=1, step_seconds=0.05, tmp=tmp_path, timeout_s=60)
    assert r["metric"]["steps"] == 1  # every=1: the faulty step's own sample exports it
    assert r["alert firing"] is not None and r["delivered"] is not None
    assert r["delivered"]["seconds"] >= r["alert firing"]["seconds"] >= r["metric"]["seconds"]
