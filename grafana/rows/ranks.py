"""Row "Ranks": the run across its ranks - who is behind, who broke first, whose gradients differ.

Aggregated by run (one line per run), drill down by rank with the `rank` variable; the per-rank panels
of the other rows carry the rank in their legends. No collective in training: everything here compares
the series the ranks export on their own.
"""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder

from ..common import SEL, Ctx, query, stat_panel, table_panel, timeseries_panel

TITLE = "Ranks"


def panels(ctx: Ctx) -> list[Builder]:
    norm = f"slatmon_grad_norm_global{{{SEL}}}"
    return [
        stat_panel(ctx, "Ranks reporting", "Ranks of the run that Prometheus scrapes now.",
                   query(ctx, f"count by (run) (slatmon_step{{{SEL}}})", "{{run}}"), width=8),
        stat_panel(ctx, "Step spread across ranks", "Slowest rank's step behind the fastest one's: under "
                   "DDP more than 1 means a rank waits (a hung rank, a straggler, a stuck collective).",
                   query(ctx, f"max by (run) (slatmon_step{{{SEL}}}) - min by (run) (slatmon_step{{{SEL}}})",
                         "{{run}}"), width=8),
        stat_panel(ctx, "Layers grouped", "Modules exported inside a group rather than alone, per rank: "
                   "max_layers ranges (layer=\"layers.[0-9]\") and, above 8 ranks, block groups "
                   "(layer=\"<block>.*\"; the run record keeps every measured layer).",
                   query(ctx, f"max by (run) (slatmon_layers_grouped{{{SEL}}})", "{{run}}"), width=8),
        timeseries_panel(ctx, "Grad-norm spread across ranks", "(max - min) / max of the ranks' global "
                         "gradient norms. After DDP's all-reduce it is 0 on every step the ranks share; "
                         "SlatmonGradNormRankDivergence fires above 1e-5 when the ranks report the same step.",
                         [query(ctx, f"(max by (run) ({norm}) - min by (run) ({norm})) / max by (run) ({norm})",
                                "{{run}}")], width=16),
        table_panel(ctx, "First non-finite step per rank", "The first step whose loss or activations were "
                    "non-finite on each rank; the lowest is the rank that broke first "
                    "(SlatmonNonFiniteFirstOnOneRank when the other ranks were still finite).",
                    query(ctx, f"slatmon_nonfinite_local_first_step{{{SEL}}}", instant=True), width=8),
    ]
