"""Row "Optimizer and dtypes": learning rate and eps per param group, and the dtype map of the layers."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, table_panel, timeseries_panel

TITLE = "Optimizer and dtypes"


def panels(ctx: Ctx) -> list[Builder]:
    return [
        timeseries_panel(ctx, "Learning rate", "lr per optimizer param group.",
                         [query(ctx, f"slatmon_optimizer_lr{{{SEL}}}", "group {{group}} (rank {{rank}})")],
                         log=True, width=6),
        timeseries_panel(ctx, "Adam eps", "eps per param group; compare with the smallest positive "
                         "value of the state dtype (fp16: 6e-8 subnormal, 6e-5 normal).",
                         [query(ctx, f"slatmon_optimizer_eps{{{SEL}}}", "group {{group}} (rank {{rank}})")],
                         log=True, width=6),
        table_panel(ctx, "dtype map", "Parameter dtype and optimizer-state dtype of every layer.",
                    query(ctx, f"slatmon_layer_info{{{SEL}}}", instant=True)),
    ]
