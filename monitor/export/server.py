"""The HTTP /metrics endpoint of one watched run (its own registry; never the global one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..errors import ConfigError
from ..findings import Finding
from ..history import RunInfo
from ..snapshot import Counters, Snapshot
from .prometheus import SnapshotCollector

__all__ = ["serve"]


def serve(snapshot: Callable[[], Snapshot], counters: Callable[[], Counters], findings: Callable[[], list[Finding]],
          info: Callable[[], RunInfo], host: str, port: int) -> tuple[Any, str]:
    """Start the endpoint for the state these callables read at scrape time, in a daemon thread;
    returns (server, url). A busy port raises ConfigError."""
    registry = CollectorRegistry(auto_describe=False)
    SnapshotCollector(snapshot, counters, findings, info, registry)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"watch(): cannot serve metrics on {host}:{port} ({exc.strerror or exc}). Another watched run "
            "may hold it: pass port=0 for any free port, port=None for no endpoint, or another port number"
        ) from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound}/metrics"
