"""Row "Training": progress, loss, global gradient norm, loss scale and skipped steps."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, right_axis_bars, stat_panel, timeseries_panel

TITLE = "Training"


def panels(ctx: Ctx) -> list[Builder]:
    return [
        stat_panel(ctx, "Optimizer step", "Last optimizer step seen (skipped steps included).",
                   query(ctx, f"slatmon_step{{{SEL}}}", "rank {{rank}}"), width=6),
        stat_panel(ctx, "Since last step", "Seconds since the last optimizer step; SlatmonRunStale fires "
                   "when this passes its threshold while the process still serves metrics.",
                   query(ctx, f"time() - slatmon_last_step_timestamp_seconds{{{SEL}}}", "rank {{rank}}"),
                   unit="s", width=6),
        stat_panel(ctx, "Skipped steps", "Optimizer steps the loss scaler skipped since the start.",
                   query(ctx, f"slatmon_skipped_steps_total{{{SEL}}}", "rank {{rank}}"), width=6),
        stat_panel(ctx, "Non-finite steps", "Sampled steps with any NaN/Inf value, by tensor kind.",
                   query(ctx, f"sum by (run, rank, tensor) (slatmon_nonfinite_steps_total{{{SEL}}})",
                         "{{tensor}} (rank {{rank}})"),
                   width=6),
        timeseries_panel(ctx, "Loss", "Last loss observed (w.observe_loss).",
                         [query(ctx, f"slatmon_loss{{{SEL}}}", "rank {{rank}}")]),
        timeseries_panel(ctx, "Global gradient norm", "L2 norm of the unscaled gradients, and its 10-minute "
                         "median: SlatmonGradNormSpike fires above 10x the median.", [
                             query(ctx, f"slatmon_grad_norm_global{{{SEL}}}", "rank {{rank}}"),
                             query(ctx, f"quantile_over_time(0.5, slatmon_grad_norm_global{{{SEL}}}[10m])",
                                   "median 10m, rank {{rank}}", ref="B"),
                         ], log=True),
        right_axis_bars(timeseries_panel(
            ctx, "Loss scale and skipped steps", "GradScaler (or custom) loss scale, left, log scale; "
            "steps skipped per interval as bars, right.", [
                query(ctx, f"slatmon_loss_scale{{{SEL}}}", "scale, rank {{rank}}"),
                query(ctx, f"increase(slatmon_skipped_steps_total{{{SEL}}}[$__rate_interval])",
                      "skipped, rank {{rank}}", ref="B"),
            ], log=True), "B"),
    ]
