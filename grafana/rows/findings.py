"""Row "Findings and alerts": active diagnosis findings, firing alerts, and the monitor's own cost."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, table_panel, timeseries_panel

TITLE = "Findings, alerts and monitor"


def panels(ctx: Ctx) -> list[Builder]:
    return [
        table_panel(ctx, "Active findings", "Findings the monitor's diagnosis reports now (code, severity); "
                    "open the triage page for evidence and fixes.",
                    query(ctx, f"slatmon_finding{{{SEL}}}", instant=True)),
        table_panel(ctx, "Firing alerts", "Prometheus alerts of these runs that are firing now.",
                    query(ctx, f'ALERTS{{alertstate="firing", {SEL}}}', instant=True)),
        timeseries_panel(ctx, "Monitor overhead", "Share of wall-clock time the monitor spent in the "
                         "training thread.",
                         [query(ctx, f"rate(slatmon_monitor_seconds_total{{{SEL}}}[$__rate_interval])",
                                "rank {{rank}}")], unit="percentunit", width=12),
        timeseries_panel(ctx, "Monitor errors", "Errors caught inside the monitor per interval (training "
                         "continues; statistics may be incomplete).",
                         [query(ctx, f"increase(slatmon_monitor_errors_total{{{SEL}}}[$__rate_interval])",
                                "rank {{rank}}")], width=12),
    ]
