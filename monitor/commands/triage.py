"""`slat-monitor triage`: start the Streamlit triage page (dashboard/app.py, `monitor.dashboard`) on 127.0.0.1.

The source goes to the page through the environment (SLATMON_RECORD, SLATMON_PROMETHEUS, SLATMON_RUN,
SLATMON_RANK, SLATMON_LOOKBACK, and the limits SLATMON_RECORDS_DIR); query parameters (`?run=&rank=` in
alert links) and the sidebar pick within those limits: records under `--records-dir`, only the
Prometheus given here. Streamlit is told which Host names to answer (`server.allowedHosts`: loopback,
the bound address, `--allow-host`), so a page of another site cannot reach it through DNS rebinding.
The process is replaced by `python -m streamlit run` (headless, no usage statistics, no file watcher,
no error details for visitors), so stopping this command stops the server. Exit status 2 with a
one-line message for bad input.
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
    p.add_argument("--records-dir", metavar="DIR",
                   help="the folder visitors may open run records from (default: the record's folder, else the "
                        "current directory)")
    p.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                   help="a Host name the page answers to besides localhost, 127.0.0.1, ::1 and --host "
                        "(repeatable; e.g. the machine's name when --host 0.0.0.0)")
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


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host names the page answers to: loopback names, the bound address (unless a wildcard), `extra`."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host.strip("[]"))
    return list(dict.fromkeys(names + [h.strip() for h in extra if h.strip()]))


def streamlit_argv(app: Path, host: str, port: int, allow: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The `python -m streamlit run` command line for `app` on host:port, answering to allowed_hosts()
    only, with cross-origin and XSRF protection on (set here: a config.toml cannot turn them off)."""
    argv = [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "none", "--server.enableCORS", "true",
            "--server.enableXsrfProtection", "true"]
    for name in allowed_hosts(host, allow):
        argv += ["--server.allowedHosts", name]
    return argv


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
    env["SLATMON_RECORDS_DIR"] = str(_records_dir(args))
    return env


def _records_dir(args: argparse.Namespace) -> Path:
    if args.records_dir:
        return Path(args.records_dir).expanduser().resolve()
    return Path(args.record).expanduser().resolve().parent if args.record else Path.cwd()


def _input_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (one line), or None."""
    if args.record and args.prometheus:
        return "give a run record path or --prometheus URL, not both"
    if args.record and not Path(args.record).expanduser().is_file():
        return (f"no run record at {args.record!r}: expected the SQLite file written by "
                "monitor.watch(..., record=PATH)")
    if args.prometheus and not args.prometheus.startswith(("http://", "https://")):
        return f"--prometheus {args.prometheus!r} is not a URL: expected e.g. http://127.0.0.1:9090"
    if args.lookback:
        from ..errors import SourceError
        from ..sources.prometheus import check_lookback

        try:
            check_lookback(args.lookback)
        except SourceError as exc:
            return f"--{exc}"
    if args.records_dir and not Path(args.records_dir).expanduser().is_dir():
        return f"--records-dir {args.records_dir!r} is not a folder"
    folder = _records_dir(args)
    if args.record and not Path(args.record).expanduser().resolve().is_relative_to(folder):
        return f"the record {args.record!r} is not under --records-dir {str(folder)!r}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _input_problem(args)
    if problem:
        return _fail(problem)
    if importlib.util.find_spec("streamlit") is None:
        return _fail("streamlit is not installed: pip install 'slat-monitor[dashboard]'")
    app = app_path()
    if not app.is_file():
        return _fail(f"the triage page is missing ({app}): reinstall slat-monitor")
    problem = _port_problem(args.host, args.port)
    if problem:
        return _fail(problem)
    names = allowed_hosts(args.host, args.allow_host)
    print(f"slat-monitor triage: serving http://{args.host}:{args.port}/ (Ctrl-C stops it); records under "
          f"{_records_dir(args)}; answers to Host {', '.join(names)}", file=sys.stderr)
    sys.stderr.flush()
    argv = streamlit_argv(app, args.host, args.port, args.allow_host)
    os.execve(argv[0], argv, _source_env(args))
    return 0  # not reached
