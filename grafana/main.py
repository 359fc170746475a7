"""Assemble slat-monitor's Grafana dashboards from the row modules (dashboards as code).

`build_dashboards()` returns {uid: dashboard JSON}; `python -m monitor.ops.generate` writes them as sorted
JSON under grafana/provisioning/dashboards/, and `slat-monitor grafana push` uploads them.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

from monitor.ops.ids import DASHBOARD_UID, DATASOURCE_UID

from .common import Ctx
from .rows import findings, layers, optimizer, ranks, training

__all__ = ["ROWS", "build_dashboards", "training_health"]

ROWS = (training, ranks, layers, optimizer, findings)


def _variable(name: str, query: str, ctx: Ctx) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(name).query(query).datasource(ctx.datasource)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def training_health(datasource_uid: str = DATASOURCE_UID) -> dashboard.Dashboard:
    """The training-health dashboard: one row per module in ROWS, `run`/`rank` variables."""
    ctx = Ctx(datasource_uid)
    board = (
        dashboard.Dashboard("slat-monitor: training health").uid(DASHBOARD_UID)
        .tags(["slat-monitor", "training"]).editable().refresh("5s").time("now-30m", "now")
        .timezone("browser")
        .with_variable(_variable("run", "label_values(slatmon_step, run)", ctx))
        .with_variable(_variable("rank", 'label_values(slatmon_step{run=~"$run"}, rank)', ctx))
    )
    panel_id = 0
    for row in ROWS:
        panel_id += 1
        board = board.with_row(dashboard.Row(row.TITLE).id(panel_id))
        for panel in row.panels(ctx):
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


def build_dashboards(datasource_uid: str = DATASOURCE_UID) -> dict[str, dict[str, Any]]:
    """Every dashboard as plain JSON, keyed by its fixed UID; panels query `datasource_uid`."""
    board = training_health(datasource_uid).build()
    return {DASHBOARD_UID: json.loads(JSONEncoder(sort_keys=True).encode(board))}


if __name__ == "__main__":
    print(json.dumps(build_dashboards(), sort_keys=True, indent=2))
