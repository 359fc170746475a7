"""`slat-monitor stack`: a local Prometheus (+ Alertmanager when installed) for watched runs, on loopback.

Configs and rules are written into `--dir` (see monitor/ops/layout.py); runs announce themselves by
writing file_sd target files into the targets folder (`monitor.watch(..., targets_dir=...)` or
`SLATMON_TARGETS_DIR`), so new runs and ranks are scraped without a restart. Ctrl-C or SIGTERM stops
both servers cleanly (exit status 0); a server that dies on its own stops the stack (exit status 1).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..ops.alerts import DEFAULT_TRIAGE_URL
from ..ops.layout import StackLayout, prepare
from ..ops.links import alertmanager_cli_hint, alertmanager_ui, prometheus_pages
from ..ops.processes import INSTALL_HINTS, Child, find_binary, start_child

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("stack", help="run a local Prometheus + Alertmanager with slat-monitor's rules",
                       description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path(".stack"), help="configs, data and logs (default .stack)")
    p.add_argument("--targets-dir", type=Path, default=None, help="file_sd target folder (default DIR/targets)")
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--alertmanager-port", type=int, default=9093)
    p.add_argument("--no-alertmanager", action="store_true", help="Prometheus only")
    p.add_argument("--webhook", default=None, help="Alertmanager webhook URL for notifications (default: none)")
    p.add_argument("--scrape-interval", default="5s", help="scrape and rule-evaluation interval (default 5s)")
    p.add_argument("--triage-url", default=DEFAULT_TRIAGE_URL, help="triage page base URL linked by alerts")
    return p


def _start_servers(args: argparse.Namespace, layout: StackLayout, am_bin: str | None) -> list[Child]:
    prom_bin = find_binary("prometheus")
    assert prom_bin is not None
    children: list[Child] = []
    try:
        if am_bin and layout.alertmanager_config:
            children.append(start_child("alertmanager", [
                am_bin, f"--config.file={layout.alertmanager_config}", f"--storage.path={layout.alertmanager_data}",
                f"--web.listen-address=127.0.0.1:{args.alertmanager_port}", "--cluster.listen-address=",
            ], args.alertmanager_port, layout.root / "alertmanager.log"))
        children.append(start_child("prometheus", [
            prom_bin, f"--config.file={layout.prometheus_config}", f"--storage.tsdb.path={layout.prometheus_data}",
            # No --web.enable-lifecycle: with it any web page could POST /-/quit or /-/reload to
            # 127.0.0.1 from the browser. The stack restarts to re-read configs (SIGHUP also reloads).
            # CORS for Prometheus' own pages only (default ".*": any site could read the query API).
            f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
            f"--web.cors.origin=https?://(localhost|127\\.0\\.0\\.1):{args.prometheus_port}",
        ], args.prometheus_port, layout.root / "prometheus.log"))
    except ConfigError:
        _stop(children)
        raise
    return children


def _stop(children: list[Child]) -> None:
    for child in reversed(children):  # Prometheus first: it may still be sending alerts
        child.stop()


def _announce(children: list[Child], layout: StackLayout, webhook: str | None) -> None:
    """Print what runs where, with links to the pages these builds really serve (see ops/links.py)."""
    for child in children:
        print(f"slat-monitor stack: {child.name:<12} {child.url}   (log {child.log})")
        if child.name == "prometheus":
            pages = prometheus_pages(child.url)
            for page, url in pages.items():
                print(f"  {page + ':':<9} {url}")
            if not pages:
                print(f"  no web UI in this build; HTTP API: {child.url}/api/v1/alerts")
        if child.name == "alertmanager":
            ui = alertmanager_ui(child.url)
            if ui is None:
                print("  web UI:   none in this build (Debian's package ships none)")
            print(f"  alerts:   {ui or alertmanager_cli_hint(child.url)}")
            print(f"  notifications: webhook {webhook}" if webhook else
                  "  notifications: none - Alertmanager delivers alerts nowhere; pass --webhook URL to receive them")
    print(f"slat-monitor stack: targets folder {layout.targets_dir}\n"
          f"  register a run:  monitor.watch(model, optimizer, port=0, targets_dir=\"{layout.targets_dir}\")\n"
          f"  or:              export SLATMON_TARGETS_DIR={layout.targets_dir}\n"
          "  Ctrl-C stops the stack.", flush=True)


def _wait(children: list[Child], stop: threading.Event) -> int:
    """Block until `stop` is set (SIGINT/SIGTERM: 0) or until a child exits on its own (1)."""
    while not stop.wait(0.5):
        dead = next((c for c in children if c.process.poll() is not None), None)
        if dead is not None:
            print(f"slat-monitor stack: {dead.name} exited with {dead.process.returncode}:\n"
                  f"{dead.log_tail()}", file=sys.stderr)
            return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if find_binary("prometheus") is None:
        print(f"slat-monitor stack: `prometheus` not found on PATH. Install it: {INSTALL_HINTS['prometheus']}",
              file=sys.stderr)
        return 2
    am_bin = None if args.no_alertmanager else find_binary("prometheus-alertmanager", ("alertmanager",))
    if am_bin is None and not args.no_alertmanager:
        print("slat-monitor stack: Alertmanager not found, running Prometheus only (alerts still evaluate). "
              f"Install it: {INSTALL_HINTS['prometheus-alertmanager']}", file=sys.stderr)
    layout = prepare(args.dir, args.targets_dir, args.alertmanager_port if am_bin else None,
                     args.webhook, args.scrape_interval, args.triage_url)
    # Handlers before the servers start: a SIGTERM while they start still stops them (they run in their
    # own sessions, so nothing else would).
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            children = _start_servers(args, layout, am_bin)
        except ConfigError as exc:
            print(f"slat-monitor stack: {exc}", file=sys.stderr)
            return 2
        try:
            _announce(children, layout, args.webhook)
            status = _wait(children, stop)
        finally:
            _stop(children)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("slat-monitor stack: stopped", flush=True)
    return status
