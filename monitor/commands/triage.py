"""`slat-monitor triage`: start the Streamlit triage page (dashboard/app.py, `monitor.dashboard`) on 127.0.0.1.

The source goes to the page through the environment (SLATMON_RECORD, SLATMON_PROMETHEUS, SLATMON_RUN,
SLATMON_RANK, SLATMON_LOOKBACK); query parameters (`?run=&rank=` in alert links) and the sidebar override
it. The process is replaced by `python -m streamlit run` (headless, no usage statistics, no file
watcher), so stopping this command stops the server. Exit status 2 with a one-line message for bad input.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import socket
import sys
from pathlib import Path

__all__ = ["add_parser", "app_path", "streamlit_argv", "run"]

DEFAULT_PORT = 8501


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "triage", help="open the triage page: findings, fixes with code, charts (Streamlit)",
        description="Serve the Streamlit triage page for a run record or a run in Prometheus: the diagnosed "
                    "findings with evidence and ranked fixes (code snippets), loss / grad-norm / loss-scale "
                    "charts, the worst layers and the non-finite events. Alert annotations link to "
                    f"http://127.0.0.1:{DEFAULT_PORT}/?run=RUN&rank=RANK.")
    p.add_argument("record", nargs="?", help="path of a run record (RUN.sqlite) to open")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--run", help="run label to open in Prometheus (default: the link's, else the only run)")
    p.add_argument("--rank", type=int, help="rank label to open in Prometheus (default: the lowest)")
    p.add_argument("--lookback", metavar="DURATION", help="how far back to read Prometheus (default 7d)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else exposes run details on the network)")
    return p


def _fail(message: str) -> int:
    print(f"slat-monitor triage: error: {message}", file=sys.stderr)
    return 2


def app_path() -> Path:
    """app.py of the installed `monitor.dashboard` package: dashboard/app.py of the checkout in an editable
    install, site-packages/monitor/dashboard/app.py from a wheel. Finds it without importing the page."""
    spec = importlib.util.find_spec("monitor.dashboard")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return Path(folders[0] if folders else Path(__file__).resolve().parents[1] / "dashboard") / "app.py"


def _port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served, or None (binds and releases it once)."""
    if not 0 < port < 65536:
        return f"--port {port} is not a TCP port (1-65535)"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is in use (another triage page?): pick another with --port"
        return f"cannot bind {host}:{port} ({exc.strerror or exc}): check --host / --port"
    return None


def streamlit_argv(app: Path, host: str, port: int) -> list[str]:
    """The `python -m streamlit run` command line for `app` on host:port."""
    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


def _source_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment for the page: the caller's, with the arguments given on top (a record given here
    drops an inherited SLATMON_PROMETHEUS and vice versa)."""
    env = dict(os.environ)
    if args.record:
        env.pop("SLATMON_PROMETHEUS", None)
        env["SLATMON_RECORD"] = str(Path(args.record).expanduser().resolve())
    if args.prometheus:
        env.pop("SLATMON_RECORD", None)
        env["SLATMON_PROMETHEUS"] = args.prometheus
    if args.run:
        env["SLATMON_RUN"] = args.run
    if args.rank is not None:
        env["SLATMON_RANK"] = str(args.rank)
    if args.lookback:
        env["SLATMON_LOOKBACK"] = args.lookback
    return env


def run(args: argparse.Namespace) -> int:
    if args.record and args.prometheus:
        return _fail("give a run record path or --prometheus URL, not both")
    if args.record and not Path(args.record).expanduser().is_file():
        return _fail(f"no run record at {args.record!r}: expected the SQLite file written by "
                     "monitor.watch(..., record=PATH)")
    if args.prometheus and not args.prometheus.startswith(("http://", "https://")):
        return _fail(f"--prometheus {args.prometheus!r} is not a URL: expected e.g. http://127.0.0.1:9090")
    if importlib.util.find_spec("streamlit") is None:
        return _fail("streamlit is not installed: pip install 'slat-monitor[dashboard]'")
    app = app_path()
    if not app.is_file():
        return _fail(f"the triage page is missing ({app}): reinstall slat-monitor")
    problem = _port_problem(args.host, args.port)
    if problem:
        return _fail(problem)
    print(f"slat-monitor triage: serving http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    sys.stderr.flush()
    argv = streamlit_argv(app, args.host, args.port)
    os.execve(argv[0], argv, _source_env(args))
    return 0  # not reached
