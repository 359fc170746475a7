"""Fixtures of the ops tests: a stand-in exporter (no torch) serving contract metric names and labels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class StandinCollector:
    """Serves a few contract metrics (ARCHITECTURE.md) for one run/rank; `values` can be changed live."""

    def __init__(self, run: str, rank: int) -> None:
        self.base = {"run": run, "rank": str(rank)}
        self.values: dict[str, float] = {"step": 1.0, "loss": 0.5, "nonfinite_param": 0.0}

    def collect(self) -> Iterator[Any]:
        keys, vals = list(self.base), list(self.base.values())
        step = GaugeMetricFamily("slatmon_step", "stand-in", labels=keys)
        step.add_metric(vals, self.values["step"])
        loss = GaugeMetricFamily("slatmon_loss", "stand-in", labels=keys)
        loss.add_metric(vals, self.values["loss"])
        nf = GaugeMetricFamily("slatmon_nonfinite_elements", "stand-in", labels=[*keys, "layer", "tensor"])
        nf.add_metric([*vals, "decoder.out", "param"], self.values["nonfinite_param"])
        errors = CounterMetricFamily("slatmon_monitor_errors", "stand-in", labels=keys)
        errors.add_metric(vals, 0.0)
        yield from (step, loss, nf, errors)


@pytest.fixture
def standin_exporter() -> Iterator[Callable[..., tuple[int, StandinCollector]]]:
    """Factory: `standin_exporter(run, rank=0) -> (port, collector)`: a /metrics endpoint on 127.0.0.1
    (prometheus_client, its own registry) exporting contract names; stopped at teardown."""
    servers: list[Any] = []

    def start(run: str, rank: int = 0) -> tuple[int, StandinCollector]:
        registry = CollectorRegistry()
        collector = StandinCollector(run, rank)
        registry.register(collector)
        server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append(server)
        return server.server_address[1], collector

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
