"""The HTTP /metrics endpoint of one watched run: its own collector, prepared off the scrape path
(export/prepare.py: per-layer text and diagnosis in a background thread), rendered by export/text.py.

A small ThreadingHTTPServer (daemon threads) instead of prometheus_client's `start_http_server`,
whose per-sample validation makes a 10,000-layer scrape take seconds (bench/export_cost.py).
A request whose Host header names neither a loopback name nor the bound address gets 403 and no data
(DNS rebinding, export/hosts.py); bound to 0.0.0.0 or :: any Host is accepted.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import ConfigError
from ..findings import Finding
from ..history import Event, RunInfo
from ..snapshot import Counters, Snapshot
from .hosts import allowed_hosts, host_allowed
from .prepare import Preparer
from .prometheus import SnapshotCollector
from .text import CONTENT_TYPE, LabelCache, render

__all__ = ["serve"]

log = logging.getLogger("monitor")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    preparer: Preparer  # set once bound (serve)

    def __init__(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.hosts = allowed_hosts(host)
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed outside do_GET (a scraper that hung up mid-response): logged at debug
        level, not socketserver's traceback on the training process's stderr; the server goes on."""
        log.debug("slat-monitor: metrics request from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "preparer"):
            self.preparer.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Every path serves the metrics (as prometheus_client's handler does), to an allowed Host."""
        if not host_allowed(self.headers.get("Host"), self.server.hosts):
            self.send_error(403, "Host not allowed", "slat-monitor serves metrics to loopback and bound-address "
                            "Host names only (DNS rebinding protection)")
            return
        prepared = self.server.preparer  # families built and rules run off this thread (export/prepare.py)
        try:
            self._send(prepared)
        finally:
            prepared.served()  # a preparation this scrape asked for starts now, not during it

    def _send(self, prepared: Preparer) -> None:
        try:
            body = render(prepared.families(), prepared.labels, on_error=prepared.error)
        except Exception as exc:  # beyond the per-family guards: counted, and the server thread lives on
            prepared.error(exc)
            self.send_error(500, f"slat-monitor: {type(exc).__name__}")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # scrapes are not news
        pass


def serve(snapshot: Callable[[], Snapshot], counters: Callable[[], Counters], findings: Callable[[], list[Finding]],
          info: Callable[[], RunInfo], host: str, port: int, *, events: Callable[[], list[Event]] | None = None,
          fallback: bool = False, export_layers: str = "auto", version: Callable[[], int] | None = None,
          ) -> tuple[Any, str]:
    """Start the endpoint for the state these callables read at scrape time, in a daemon thread;
    returns (server, url). `version()` moves whenever what `snapshot` / `findings` return may have
    changed (default: the snapshot's identity). A busy port raises ConfigError, or, with `fallback`
    (the caller did not choose the port), is replaced by a free one with a log line."""
    try:
        server = _Server(host, port)
    except OSError as exc:
        if not fallback:
            raise _busy(host, port, exc) from None
        server = _Server(host, 0)
        log.warning("slat-monitor: default port %s:%d is busy (%s); serving metrics on port %d instead "
                    "(pass port= to choose one)", host, port, exc.strerror or exc, server.server_address[1])
    events = events or list
    collector = SnapshotCollector(snapshot, counters, findings, info, events=events, export_layers=export_layers,
                                  on_error=lambda exc: server.preparer.error(exc))
    server.preparer = Preparer(collector, LabelCache(), snapshot=snapshot, version=version or (lambda: id(snapshot())),
                               findings=findings, counters=counters, events=events)
    threading.Thread(target=server.serve_forever, name="slatmon-metrics", daemon=True).start()
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound}/metrics"


def _busy(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(
        f"watch(): cannot serve metrics on {host}:{port} ({exc.strerror or exc}). Another watched run "
        "may hold it: pass port=0 for any free port, port=None for no endpoint, or another port number")
