"""The training-health dashboard: structure, fixed UIDs, variables, and coverage of the metric contract."""

from __future__ import annotations

import re

from monitor.grafana.main import build_dashboards
from monitor.ops.ids import DASHBOARD_UID, DATASOURCE_UID

REQUIRED_METRICS = (
    "slatmon_loss", "slatmon_grad_norm_global", "slatmon_loss_scale", "slatmon_skipped_steps_total",
    "slatmon_grad_norm", "slatmon_nonfinite_elements", "slatmon_update_ratio", "slatmon_optimizer_lr",
    "slatmon_optimizer_eps", "slatmon_layer_info", "slatmon_finding", "slatmon_monitor_seconds_total",
)


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_fixed_uid_variables_and_unique_panel_ids() -> None:
    board = build_dashboards()[DASHBOARD_UID]
    assert board["uid"] == DASHBOARD_UID
    assert [v["name"] for v in board["templating"]["list"]] == ["run", "rank"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids


def test_every_panel_queries_the_fixed_datasource_with_the_run_and_rank_filter() -> None:
    for panel in panels(build_dashboards()[DASHBOARD_UID]):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == DATASOURCE_UID
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID
            assert 'run=~"$run"' in target["expr"] and 'rank=~"$rank"' in target["expr"], panel["title"]


def test_panels_cover_the_metric_contract() -> None:
    exprs = " ".join(t["expr"] for p in panels(build_dashboards()[DASHBOARD_UID]) for t in p["targets"])
    used = set(re.findall(r"\bslatmon_[a-z_]+\b", exprs))
    assert set(REQUIRED_METRICS) <= used, set(REQUIRED_METRICS) - used


def test_datasource_uid_can_be_overridden_for_push() -> None:
    board = build_dashboards("their-prom")[DASHBOARD_UID]
    assert {t["datasource"]["uid"] for p in panels(board) for t in p["targets"]} == {"their-prom"}


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for p in build_dashboards()[DASHBOARD_UID]["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine
