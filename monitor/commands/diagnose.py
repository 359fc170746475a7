"""`slat-monitor diagnose`: findings for a run record or a Prometheus run, ranked, with fixes.

Exit status: 0 healthy (no critical finding), 1 critical findings, 2 bad input (missing file, not a
run record, unreachable Prometheus, unknown run) - always a one-line message on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SlatMonitorError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "diagnose", help="explain what broke in a run and how to fix it",
        description="Run the diagnosis rules over a run record (SQLite, from monitor.watch(record=...)) or "
                    "over a run's series in Prometheus, and print the findings, most severe first, with "
                    "evidence and code fixes. Exit status: 0 healthy, 1 critical findings, 2 bad input.")
    p.add_argument("record", nargs="?", help="path of the run record (RUN.sqlite)")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--run", help="run label to read from Prometheus (default: the only run there)")
    p.add_argument("--rank", type=int, help="rank label to read from Prometheus (default: the lowest)")
    p.add_argument("--lookback", default="7d", metavar="DURATION",
                   help="how far back to read from Prometheus (a PromQL duration; default 7d)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def _fail(message: str) -> int:
    print(f"slat-monitor diagnose: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from ..diagnosis import load_history, run_rules
    from ..diagnosis.report import exit_status, to_json, to_text

    if bool(args.record) == bool(args.prometheus):
        return _fail("give either a run record path or --prometheus URL (exactly one)")
    if args.record and (args.run or args.rank is not None):
        return _fail("--run/--rank select series in Prometheus; a run record holds one run already")
    try:
        if args.prometheus:
            from ..sources.prometheus import read_prometheus

            history = read_prometheus(args.prometheus, run=args.run, rank=args.rank, lookback=args.lookback)
        else:
            history = load_history(args.record)
    except SlatMonitorError as exc:
        return _fail(str(exc))
    except (OSError, ValueError, TypeError, KeyError) as exc:  # a record from an incompatible version
        return _fail(f"could not read {args.record or args.prometheus}: {type(exc).__name__}: {exc}")
    findings = run_rules(history)
    if args.json:
        print(json.dumps(to_json(findings, history), indent=2, default=str))
    else:
        print(to_text(findings, history), end="")
    return exit_status(findings)
