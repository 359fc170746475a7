"""Panel and query factories shared by the dashboard rows, so every panel looks and filters alike.

Every query selects `SEL` (the dashboard's run/rank variables); `$__rate_interval` is Grafana's
scrape-aware rate window. Datasource references use a fixed UID chosen when the dashboard is built
(`build_dashboards(datasource_uid=...)`), the provisioned one by default.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DataTransformerConfig, DynamicConfigValue
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["SEL", "Ctx", "query", "right_axis_bars", "stat_panel", "table_panel", "timeseries_panel"]

SEL = 'run=~"$run", rank=~"$rank"'
# Columns Prometheus adds that say nothing about the run; hidden in tables.
NOISE_COLUMNS = ("Time", "Value", "__name__", "instance", "job")


class Ctx:
    """What every factory needs: the datasource the panels query."""

    def __init__(self, datasource_uid: str) -> None:
        self.datasource = DataSourceRef(type_val="prometheus", uid=datasource_uid)


def query(ctx: Ctx, expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    """A PromQL target; `legend` is a Grafana legend format such as "{{layer}}"."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(ctx.datasource)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def timeseries_panel(ctx: Ctx, title: str, description: str, targets: list[prometheus.Dataquery],
                     unit: str = "short", log: bool = False, width: int = 8) -> timeseries.Panel:
    """A time-series panel, 8 rows high; `log` puts the y axis on a log10 scale (norms, ratios, scales)."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(ctx.datasource)
        .unit(unit).height(8).span(width).line_width(1).fill_opacity(0).show_points(
            common_models.VisibilityMode.NEVER)
        .legend(common_builders.VizLegendOptions().show_legend(True)
                .display_mode(common_models.LegendDisplayMode.LIST)
                .placement(common_models.LegendPlacement.BOTTOM))
    )
    if log:
        panel = panel.scale_distribution(
            common_builders.ScaleDistributionConfig().type(common_models.ScaleDistribution.LOG).log(10))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def right_axis_bars(panel: timeseries.Panel, ref: str) -> timeseries.Panel:
    """Draw query `ref` of `panel` as bars on the right axis (counts next to a continuous quantity)."""
    return panel.override_by_query(ref, [
        DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        DynamicConfigValue(id_val="custom.drawStyle", value="bars"),
        DynamicConfigValue(id_val="custom.scaleDistribution", value={"type": "linear"}),
        DynamicConfigValue(id_val="unit", value="short"),
    ])


def stat_panel(ctx: Ctx, title: str, description: str, target: prometheus.Dataquery,
               unit: str = "short", width: int = 4) -> stat.Panel:
    """A single-number panel (last value), 4 rows high."""
    return (stat.Panel().title(title).description(description).datasource(ctx.datasource)
            .unit(unit).height(4).span(width).with_target(target)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(common_models.BigValueGraphMode.AREA)
            .color_mode(common_models.BigValueColorMode.VALUE))


def table_panel(ctx: Ctx, title: str, description: str, target: prometheus.Dataquery,
                width: int = 12, height: int = 8) -> table.Panel:
    """A table of an instant query's label sets (one row per series), Prometheus bookkeeping columns hidden."""
    hide = {name: True for name in NOISE_COLUMNS}
    return (table.Panel().title(title).description(description).datasource(ctx.datasource)
            .height(height).span(width).with_target(target).show_header(True)
            .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": hide})))

