"""Prometheus series of a many-rank run, computed from what a small run really exported.

    python bench/series.py --prometheus http://127.0.0.1:9090 --run RUN [--ranks 64] [--config base]

Counts the series each rank of RUN has in Prometheus (the per-layer ones, those with a `layer` label,
apart), derives the per-layer series per layer and the fixed series per rank, and extrapolates to
`--ranks` ranks of the `--config` SLAT VAE (its layer names from the model built on the meta device,
no memory): exporting every layer, and grouped by block (the default above 8 ranks: `WORST` layers in
full plus one series set per block, monitor/export/grouping.py).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass

__all__ = ["Estimate", "layer_names", "measure"]


def _query(base: str, expr: str) -> dict[str, float]:
    url = f"{base.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    return {r["metric"].get("rank", ""): float(r["value"][1]) for r in body["data"]["result"]}


@dataclass(frozen=True)
class Estimate:
    """Measured per rank (`fixed`, `per_layer` series per layer, `layers`), and the extrapolations."""

    fixed: int
    per_layer: float
    layers: int
    ranks_measured: int

    def series(self, ranks: int, layers: int) -> int:
        return round(ranks * (self.fixed + self.per_layer * layers))


def measure(base: str, run: str, lookback: str = "10m") -> Estimate:
    """Series of every rank of `run` seen within `lookback`. Raises ValueError when the ranks disagree
    (they export the same families for the same model, so they must not)."""
    sel = f'{{__name__=~"slatmon_.+",run="{run}"}}'
    total = _query(base, f"count by (rank) (last_over_time({sel}[{lookback}]))")
    layered = _query(base, f'count by (rank) (last_over_time({sel[:-1]},layer!=""}}[{lookback}]))')
    layers = _query(base, f'count by (rank) (last_over_time(slatmon_layer_info{{run="{run}"}}[{lookback}]))')
    if not total or len(set(total.values())) != 1 or len(set(layered.values())) != 1:
        raise ValueError(f"ranks of {run!r} export different series counts: {total} / {layered}")
    n_layers = int(next(iter(layers.values())))
    per_layer = next(iter(layered.values())) / n_layers
    return Estimate(int(next(iter(total.values())) - next(iter(layered.values()))), per_layer, n_layers, len(total))


def layer_names(config: str) -> list[str]:
    """The layers slat-monitor exports for trainer_example's `config` model (built on the meta device)."""
    import torch

    from monitor.layers import LayerMap
    from trainer_example.config import model_preset
    from trainer_example.model import SlatVAE

    with torch.device("meta"):
        model = SlatVAE(model_preset(config), native=True)
    return list(LayerMap.build(model).names)


def grouped_count(names: list[str]) -> int:
    """Layer series sets exported with grouping: the worst layers in full plus one per group."""
    from monitor.export.grouping import WORST, group_name

    return min(len(names), WORST + len({group_name(n) for n in names}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prometheus", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--ranks", type=int, default=64)
    p.add_argument("--config", default="base", help="trainer_example model preset to extrapolate to")
    args = p.parse_args(argv)
    est = measure(args.prometheus, args.run)
    names = layer_names(args.config)
    print(f"measured: {est.ranks_measured} ranks of {args.run!r}, {est.layers} layers: {est.fixed} fixed series "
          f"per rank + {est.per_layer:.2f} per layer")
    print(f"| {args.config} model, {len(names)} layers | series per rank | {args.ranks} ranks |")
    print("|---|---|---|")
    for label, layers in (("every layer", len(names)), ("grouped by block", grouped_count(names))):
        print(f"| {label} ({layers} layer series sets) | {est.series(1, layers)} | {est.series(args.ranks, layers)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
