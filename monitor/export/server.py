"""The HTTP /metrics endpoint of one Watcher (its own registry; never the global one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from ..errors import ConfigError
from .prometheus import SnapshotCollector

if TYPE_CHECKING:
    from ..watcher import Watcher

__all__ = ["serve"]


def serve(watcher: Watcher, host: str, port: int) -> tuple[Any, str]:
    """Start the endpoint in a daemon thread; returns (server, url). A busy port raises ConfigError."""
    registry = CollectorRegistry(auto_describe=False)
    tracker = watcher.tracker
    SnapshotCollector(lambda: tracker.snapshot, lambda: watcher.counters, tracker.findings_cached,
                      lambda: watcher.info, registry)
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
