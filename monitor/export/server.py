"""The HTTP /metrics endpoint of one watched run (its own registry; never the global one)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..errors import ConfigError
from ..findings import Finding
from ..history import Event, RunInfo
from ..snapshot import Counters, Snapshot
from .prometheus import SnapshotCollector

__all__ = ["serve"]

log = logging.getLogger("monitor")


def serve(snapshot: Callable[[], Snapshot], counters: Callable[[], Counters], findings: Callable[[], list[Finding]],
          info: Callable[[], RunInfo], host: str, port: int, *, events: Callable[[], list[Event]] | None = None,
          fallback: bool = False, export_layers: str = "auto") -> tuple[Any, str]:
    """Start the endpoint for the state these callables read at scrape time, in a daemon thread;
    returns (server, url). A busy port raises ConfigError, or, with `fallback` (the caller did not
    choose the port), is replaced by a free one with a log line."""
    registry = CollectorRegistry(auto_describe=False)
    SnapshotCollector(snapshot, counters, findings, info, registry, events=events, export_layers=export_layers)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if not fallback:
            raise _busy(host, port, exc) from None
        server, _thread = start_http_server(0, addr=host, registry=registry)
        log.warning("slat-monitor: default port %s:%d is busy (%s); serving metrics on port %d instead "
                    "(pass port= to choose one)", host, port, exc.strerror or exc, server.server_address[1])
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound}/metrics"


def _busy(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(
        f"watch(): cannot serve metrics on {host}:{port} ({exc.strerror or exc}). Another watched run "
        "may hold it: pass port=0 for any free port, port=None for no endpoint, or another port number")
