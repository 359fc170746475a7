"""Row "Optimizer and dtypes": lr and eps per param group, the dtype map of the layers, the run's set-up."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, table_panel, timeseries_panel

TITLE = "Optimizer and dtypes"


def panels(ctx: Ctx) -> list[Builder]:
    return [
        timeseries_panel(ctx, "Learning rate", "lr per optimizer param group.",
                         [query(ctx, f"slatmon_optimizer_lr{{{SEL}}}", "group {{group}} (rank {{rank}})")],
                         log=True, width=12),
        timeseries_panel(ctx, "Adam eps", "eps per param group; compare with the smallest positive "
                         "value of the state dtype (fp16: 6e-8 subnormal, 6e-5 normal).",
                         [query(ctx, f"slatmon_optimizer_eps{{{SEL}}}", "group {{group}} (rank {{rank}})")],
                         log=True, width=12),
        table_panel(ctx, "dtype map", "Parameter dtype and optimizer-state dtype of every layer.",
                    query(ctx, f"slatmon_layer_info{{{SEL}}}", instant=True)),
        table_panel(ctx, "Run set-up", "Loss scaling (grad_scaler, custom, none), optimizer, fp32 master "
                    "weights, autocast dtype and torch version of each rank.",
                    query(ctx, f"slatmon_run_info{{{SEL}}}", instant=True)),
    ]
