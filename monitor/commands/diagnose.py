"""`slat-monitor diagnose`: findings for a run record or a Prometheus run, ranked, with fixes.

Exit status: 0 healthy (no critical finding), 1 critical findings, 2 bad input (missing file, not a
run record, unreachable Prometheus, unknown run) - always a one-line message on stderr, no traceback.

Several records (one per rank: `runs/a.rank*.sqlite`) or `--prometheus URL --all-ranks` diagnose a run
across its ranks: each rank's findings, the cross-rank findings, and which rank broke first.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SlatMonitorError
from ..terminal import printable

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "diagnose", help="explain what broke in a run and how to fix it",
        description="Run the diagnosis rules over a run record (SQLite, from monitor.watch(record=...)) or "
                    "over a run's series in Prometheus, and print the findings, most severe first, with "
                    "evidence and code fixes. Exit status: 0 healthy, 1 critical findings, 2 bad input.")
    p.add_argument("record", nargs="*", help="path of the run record (RUN.sqlite); several: one per rank")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--run", help="run label to read from Prometheus (default: the only run there)")
    p.add_argument("--rank", type=int, help="rank label to read from Prometheus (default: the lowest)")
    p.add_argument("--all-ranks", action="store_true",
                   help="with --prometheus: every rank of the run, compared (which rank broke first)")
    p.add_argument("--lookback", default="7d", metavar="DURATION",
                   help="how far back to read from Prometheus (a PromQL duration; default 7d)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (everything)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print every evidence line, the per-layer details and every fix's code (default: the "
                        "top finding's evidence and first fix in full, the others in one line each)")
    return p


def _fail(message: str) -> int:
    """One line on stderr; the message may quote a path or a run name, escaped for the terminal."""
    print(f"slat-monitor diagnose: error: {printable(message)}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from ..diagnosis import load_history, run_rules
    from ..diagnosis.report import exit_status, to_json, to_text

    if bool(args.record) == bool(args.prometheus):
        return _fail("give either run record path(s) or --prometheus URL (exactly one)")
    if args.record and (args.run or args.rank is not None or args.all_ranks):
        return _fail("--run/--rank/--all-ranks select series in Prometheus; a run record holds one run already")
    if args.all_ranks and args.rank is not None:
        return _fail("--all-ranks reads every rank; drop --rank")
    if len(args.record) > 1 or args.all_ranks:
        return _across_ranks(args)
    args.record = args.record[0] if args.record else None
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
        print(to_text(findings, history, args.verbose), end="")
    return exit_status(findings)


def _across_ranks(args: argparse.Namespace) -> int:
    from ..crossrank.report import diagnose_ranks, ranks_json, ranks_text, status
    from ..diagnosis import load_history

    try:
        if args.prometheus:
            from ..sources.prometheus import read_all_ranks

            histories = read_all_ranks(args.prometheus, run=args.run, lookback=args.lookback)
        else:
            histories = [load_history(path) for path in args.record]
    except SlatMonitorError as exc:
        return _fail(str(exc))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return _fail(f"could not read the run's ranks: {type(exc).__name__}: {exc}")
    ranks = [h.run.rank for h in histories]
    if len(set(ranks)) != len(ranks):
        return _fail(f"several records hold the same rank ({sorted(ranks)}): give one record per rank of one run")
    result = diagnose_ranks(histories)
    print(json.dumps(ranks_json(result), indent=2, default=str) if args.json else ranks_text(result, args.verbose),
          end="\n" if args.json else "")
    return status(result)
