"""Many nodes, Prometheus-native: one Prometheus per node discovers its ranks (file SD), a global one
federates both; every dashboard query answers for the ranks of both nodes from the global server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

import monitor
from monitor.grafana.main import build_dashboards
from monitor.ops.configs import federation_config, prometheus_config
from monitor.ops.ids import DASHBOARD_UID
from monitor.ops.targets import register
from tests.models import Fp16Blocks, watched_step

RUN = "fed"
NODES = {"node-a": (0, 1), "node-b": (2, 3)}  # two ranks per node
RATE_INTERVAL = "5s"
RULES = str(Path(__file__).resolve().parents[2] / "prometheus" / "rules" / "*.yml")


def _rank(rank: int, targets: Path) -> tuple[monitor.Watcher, object]:
    """A watched 'rank': two AdamW steps of Fp16Blocks (fp16 + eps 1e-8: non-finite params, findings)."""
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    w = monitor.watch(model, opt, port=0, run=RUN, rank=rank)
    for step in (1, 2):
        watched_step(model, opt, w, step)
    port = urlparse(w.url).port
    return w, register(targets, "127.0.0.1", port, RUN, rank)


def _ranks(prom, expr: str) -> set[str]:
    return {r["metric"].get("rank", "") for r in prom.query(expr)}


@pytest.mark.slow
def test_global_prometheus_sees_every_rank_of_both_nodes(servers, tmp_path: Path) -> None:
    handles, nodes = [], {}
    try:
        for node, ranks in NODES.items():
            targets = tmp_path / node
            handles += [_rank(r, targets) for r in ranks]
            nodes[node] = servers.prometheus(prometheus_config(
                targets_glob=str(targets / "*.json"), rule_globs=(), alertmanager=None, interval="1s", node=node),
                name=node)
        glob = servers.prometheus(federation_config([urlparse(p.url).netloc for p in nodes.values()],
                                                    rule_globs=(RULES,), alertmanager=None, interval="1s"),
                                  name="global")
        everyone = {str(r) for ranks in NODES.values() for r in ranks}
        glob.wait_for(lambda: _ranks(glob, f'slatmon_step{{run="{RUN}"}}') == everyone, timeout=60,
                      what="the global Prometheus federating all four ranks")
        glob.wait_for(lambda: _ranks(glob, f'count_over_time(slatmon_step{{run="{RUN}"}}[{RATE_INTERVAL}]) >= 3')
                      == everyone, timeout=60, what="enough federated samples for rate() on every rank")
        glob.wait_for(lambda: glob.query('slatmon:grad_norm:worst_layer'), timeout=30, what="recording rule")
        for node, ranks in NODES.items():  # each node only knows its own ranks; the node label survives
            assert _ranks(nodes[node], f'slatmon_step{{run="{RUN}"}}') == {str(r) for r in ranks}
            assert {r["metric"]["node"] for r in glob.query(f'slatmon_step{{rank=~"{"|".join(map(str, ranks))}"}}')} \
                == {node}
        board = build_dashboards()[DASHBOARD_UID]
        answered = 0
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$run", RUN).replace("$rank", ".*")
                expr = expr.replace("$__rate_interval", RATE_INTERVAL)
                seen = _ranks(glob, expr)
                if seen - {""}:
                    # a top-k panel shows k series of the whole run; every other panel every rank
                    whole = seen == everyone or ("topk(" in expr and seen <= everyone)
                    assert whole, f"{panel['title']}: {sorted(seen)} from {expr}"
                    answered += 1
        assert answered >= 5, "the dashboard's per-rank panels answered from the global Prometheus"
        alerts = glob.wait_for(lambda: [a for a in glob.alerts() if a["labels"]["alertname"] ==
                                        "SlatmonNonFiniteValues"], timeout=30, what="alerts on the global server")
        assert {a["labels"]["rank"] for a in alerts} == everyone
    finally:
        for w, reg in handles:
            reg.remove()
            w.close()
