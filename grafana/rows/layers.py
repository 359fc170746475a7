"""Row "Layers": per-layer gradient norms, non-finite counts, update ratios, zero shares, Adam's
second-moment lag and 16-bit updates rounding away (top 10)."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, timeseries_panel

TITLE = "Layers"
LEGEND = "{{layer}} (rank {{rank}})"


def panels(ctx: Ctx) -> list[Builder]:
    return [
        timeseries_panel(ctx, "Gradient norm per layer (top 10)", "Unscaled per-layer gradient L2 norm of "
                         "the 10 largest layers at each point in time.",
                         [query(ctx, f"topk(10, slatmon_grad_norm{{{SEL}}})", LEGEND)], log=True),
        timeseries_panel(ctx, "Non-finite elements by layer", "NaN+Inf elements per layer and tensor kind; "
                         "empty while everything is finite.",
                         [query(ctx, f"sum by (run, rank, layer, tensor) (slatmon_nonfinite_elements{{{SEL}}}) > 0",
                                "{{layer}} {{tensor}} (rank {{rank}})")]),
        timeseries_panel(ctx, "Update ratio per layer (top 10)", "norm(update) / norm(param); around 1e-3 "
                         "is usual, far above means the learning rate is too high for that layer.",
                         [query(ctx, f"topk(10, slatmon_update_ratio{{{SEL}}})", LEGEND)], log=True),
        timeseries_panel(ctx, "Zero-gradient share per layer (top 10)", "Share of exactly-zero gradient "
                         "elements: fp16 underflow when high without a loss scaler.",
                         [query(ctx, f"topk(10, slatmon_zero_grad_ratio{{{SEL}}})", LEGEND)],
                         unit="percentunit", width=12),
        timeseries_panel(ctx, "Adam exp_avg_sq == 0 share (top 10)", "Share of second-moment elements "
                         "equal to 0: with an eps below what the state dtype holds, the update divides by 0.",
                         [query(ctx, f"topk(10, slatmon_adam_state_zero_ratio{{{SEL}}})", LEGEND)],
                         unit="percentunit", width=12),
        timeseries_panel(ctx, "Adam RMS(g^2 / v_hat) per layer (top 10)", "Second-moment lag: ~1 while "
                         "exp_avg_sq tracks the squared gradients; >= 5 means the update is several times "
                         "Adam's usual size, and a loss spike is likely within a few steps.",
                         [query(ctx, f"topk(10, slatmon_adam_rms_ratio{{{SEL}}})", LEGEND)], log=True, width=12),
        timeseries_panel(ctx, "16-bit weights left unchanged by the update (top 10)", "Share of fp16/bf16 "
                         "weight elements a step did not change: near 1 with non-zero gradients, the "
                         "updates round away (lr below the weights' resolution).",
                         [query(ctx, f"topk(10, slatmon_update_unchanged_ratio{{{SEL}}})", LEGEND)],
                         unit="percentunit", width=12),
    ]
