"""Export cost: scrape latency and body size by layer count, run-record size, dashboard query time.

    python -m bench.export_cost                       # 100 / 1,000 / 10,000 layers; 1,000-step record;
                                                      # dashboard queries over a backfilled 10,000-step run
    python -m bench.export_cost --skip-dashboard      # without Prometheus

Scrapes: a real Watcher (max_layers = layer count) on a model of N one-parameter layers; `GET
/metrics` timed from this process (medians of 10): right after a sampled step, and once more; the
per-layer text and the diagnosis are prepared in the endpoint's background thread (their time per
step reported beside, and how often the scrape right after a step still showed the step before);
body in bytes.
Record: the SQLite record (+ WAL) of 1,000 watched steps of a 100-layer model, every=1 and every=10.
Dashboard: the exporter's series of a 100-layer run (labels exactly as exported) backfilled into
a real Prometheus with `promtool tsdb create-blocks-from openmetrics`: a 10,000-step run at one
step per second scraped every 5 s (the shipped interval: 2,000 samples per series); then every
query of the committed Grafana dashboard, as a range query over the whole run at Grafana's
~1,000 points per panel (step 10 s; instant queries at the run's end, as the dashboard sends
them), timed through the HTTP API (median of 3). Values: moving families (norms, ratios, loss)
random-walk around the exported value, counters grow, the rest keep the exported value.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import monitor

__all__ = ["dashboard_queries", "main", "record_size", "scrape_cost"]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "grafana" / "provisioning" / "dashboards" / "slatmon-training-health.json"


def _layers_model(n: int) -> nn.Module:
    """n layers named like a real model's (`blocks.17.proj`), one 4-element weight each."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 2, bias=False)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(Block() for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return sum(b.proj(x) for b in self.blocks)  # type: ignore[return-value]

    return Model()


def _watched(n: int, steps: int, **options: object) -> tuple[monitor.Watcher, Callable[[], None]]:
    """A watcher on an `n`-layer model after `steps` training steps, and the function that trains one more."""
    torch.manual_seed(0)
    model = _layers_model(n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = monitor.watch(model, opt, max_layers=n, run=f"bench{n}", **options)
    x = torch.randn(4, 2)

    def step() -> None:
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        w.observe_loss(loss)
        loss.backward()
        opt.step()

    for _ in range(steps):
        step()
    return w, step


def _get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def scrape_cost(n: int, repeats: int = 10) -> dict[str, float]:
    """Scrape latency (ms, medians) of a watcher with `n` layers and the body size (bytes).

    `scrape_ms`: right after a sampled step; `cached_ms`: once more. The per-layer text and the
    diagnosis are prepared in the endpoint's background thread (monitor/export/prepare.py):
    `prepare_ms` is that work per step (not on the scrape path), `behind` the share of scrapes right
    after a step that still showed the step before (a slow preparation is not waited for)."""
    w, step = _watched(n, 1, port=0)
    preparer = w._server.preparer  # type: ignore[union-attr]
    try:
        _get(w.url)  # warm-up
        fresh, cached, prepared, behind, body = [], [], [], 0, b""
        for _ in range(repeats):
            step()
            t, body = _get(w.url)
            fresh.append(t)
            behind += _sampled_step(body) != w.counters.step
            cached.append(_get(w.url)[0])
            while _sampled_step(_get(w.url)[1]) != w.counters.step:  # untimed: let the preparation finish
                time.sleep(0.05)
            prepared.append(preparer._state.layer_seconds + preparer._state.rules_seconds)
    finally:
        w.close()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    ms = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    return {"layers": n, "scrape_ms": ms(fresh), "cached_ms": ms(cached), "prepare_ms": ms(prepared),
            "behind": behind / repeats, "body_bytes": len(body), "series": series}


def _sampled_step(body: bytes) -> int | None:
    m = re.search(rb"^slatmon_sampled_step\{[^}]*\} (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else None


def record_size(steps: int, every: int, layers: int, tmp: Path) -> dict[str, float]:
    path = tmp / f"rec-{every}.db"
    w, _ = _watched(layers, steps, port=None, record=path, every=every)
    w.close()
    size = sum(p.stat().st_size for p in tmp.glob(f"rec-{every}.db*"))
    return {"layers": layers, "steps": steps, "every": every, "bytes": size,
            "bytes_per_1000_steps": size * 1000 / steps}


def _exported_series(layers: int) -> list[tuple[str, str, str, float]]:
    """(family, type, 'name{labels}', value) of every sample a real `layers`-layer watcher exports."""
    w, _ = _watched(layers, 2, port=0)
    try:
        _, body = _get(w.url)
    finally:
        w.close()
    types, out = {}, []
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            types[fam] = typ
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            fam = next((f for f in (name, name.removesuffix("_total")) if f in types), name)
            if not name.endswith("_created"):
                out.append((fam, types.get(fam, "gauge"), series, float(value)))
    return out


# Families whose values move step by step (a random walk around the exported value); counters and
# the step grow; the rest (info, lr, eps, non-finite counts of a healthy run) keep the exported value.
_MOVING = {"slatmon_loss", "slatmon_grad_norm", "slatmon_grad_norm_global", "slatmon_param_norm",
           "slatmon_update_ratio", "slatmon_zero_grad_ratio", "slatmon_adam_state_zero_ratio",
           "slatmon_adam_rms_ratio", "slatmon_update_unchanged_ratio"}
_GROWING = {"slatmon_step", "slatmon_last_step_timestamp_seconds"}


def _openmetrics(series: list[tuple[str, str, str, float]], start: int, samples: int, interval: int,
                 path: Path) -> None:
    """Backfill input: every series with `samples` values, `interval` s apart, grouped by family."""
    gen = torch.Generator().manual_seed(0)
    by_family: dict[str, list[tuple[str, float]]] = {}
    kinds: dict[str, str] = {}
    for fam, typ, s, v in series:
        by_family.setdefault(fam, []).append((s, v))
        kinds[fam] = typ
    with open(path, "w") as f:
        for fam, members in by_family.items():
            counter = kinds[fam] == "counter"
            f.write(f"# TYPE {fam} {'counter' if counter else 'gauge'}\n")
            for s, v in members:
                if fam in _MOVING:
                    values = (v * (1 + 0.01 * torch.randn(samples, generator=gen).cumsum(0).abs())).tolist()
                elif counter or fam in _GROWING:
                    values = [v + i * interval for i in range(samples)]
                else:
                    values = [v] * samples
                f.writelines(f"{s} {x:.6g} {start + i * interval}\n" for i, x in enumerate(values))
        f.write("# EOF\n")


def _query_ms(base: str, expr: str, instant: bool, start: int, end: int, step: int,
              repeats: int) -> tuple[float, int]:
    """Median ms of the query as Grafana sends it (instant at `end`, or a range) and the points returned."""
    args = {"query": expr, "time": end} if instant else {"query": expr, "start": start, "end": end, "step": step}
    url = f"{base}/api/v1/{'query' if instant else 'query_range'}?{urllib.parse.urlencode(args)}"
    times, n = [], 0
    for _ in range(repeats):
        t, body = _get(url)
        times.append(t)
        data = json.loads(body)
        assert data["status"] == "success", data
        n = sum(len(r.get("values", [])) or 1 for r in data["data"]["result"])
    return 1e3 * statistics.median(times), n


def dashboard_queries(layers: int, steps: int, interval: int, tmp: Path, repeats: int = 3) -> list[dict]:
    """Backfill a `steps`-step run (1 step/s, scraped every `interval` s) and time each dashboard query."""
    from tests.realservers import Servers

    series = _exported_series(layers)
    run = re.search(r'run="([^"]+)"', series[0][2]).group(1)  # type: ignore[union-attr]
    end = int(time.time()) // 60 * 60 - 60
    start = end - steps
    om, data = tmp / "backfill.om", tmp / "prometheus" / "data"  # where Servers.prometheus keeps its TSDB
    _openmetrics(series, start, steps // interval, interval, om)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
                   check=True, capture_output=True, timeout=600)
    om.unlink()
    servers = Servers(tmp)
    try:
        prom = servers.prometheus({"global": {"scrape_interval": "5s"}, "scrape_configs": []})
        panels = _dashboard_exprs()
        rows = []
        for title, expr, instant in panels:
            q = expr.replace("$__rate_interval", "1m").replace('"$run"', f'"{run}"').replace('"$rank"', '".*"')
            ms, points = _query_ms(prom.url, q, instant, start, end, max(1, steps // 1000), repeats)
            rows.append({"panel": title, "query_ms": ms, "points": points})
        return rows
    finally:
        servers.close()


def _dashboard_exprs() -> list[tuple[str, str, bool]]:
    doc = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict]) -> list[dict]:
        return [q for p in panels for q in [p, *walk(p.get("panels", []))]]

    return [(p.get("title", ""), t["expr"], bool(t.get("instant"))) for p in walk(doc["panels"])
            for t in p.get("targets", []) if t.get("expr")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.export_cost", description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--record-steps", type=int, default=1000)
    p.add_argument("--run-steps", type=int, default=10000)
    p.add_argument("--skip-dashboard", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch={torch.__version__}\n\n| layers | series | scrape after a sampled step (ms) "
          "| showed the step before | repeat scrape (ms) | prepared off the scrape path (ms) | body (KiB) |\n"
          "|---|---|---|---|---|---|---|")
    for n in a.layers:
        r = scrape_cost(n)
        print(f"| {n} | {r['series']} | {r['scrape_ms']:.1f} | {r['behind']:.0%} | {r['cached_ms']:.1f} "
              f"| {r['prepare_ms']:.1f} | {r['body_bytes'] / 1024:.0f} |", flush=True)
    with tempfile.TemporaryDirectory(prefix="slatmon-export-") as tmp:
        print("\n| record | layers | every | bytes per 1,000 steps |\n|---|---|---|---|")
        for every in (1, 10):
            r = record_size(a.record_steps, every, 100, Path(tmp))
            kib = r["bytes_per_1000_steps"] / 1024
            print(f"| {a.record_steps} steps | 100 | {every} | {kib:.0f} KiB |", flush=True)
        if not a.skip_dashboard:
            rows = dashboard_queries(100, a.run_steps, 5, Path(tmp))
            print(f"\nDashboard over a backfilled {a.run_steps}-step run (100 layers, 5 s scrapes):\n"
                  "| panel | query (ms, median of 3) | points returned |\n|---|---|---|")
            for r in rows:
                print(f"| {r['panel']} | {r['query_ms']:.1f} | {r['points']} |")
            print(f"| **all {len(rows)} queries** | {sum(r['query_ms'] for r in rows):.0f} | |")


if __name__ == "__main__":
    main()
