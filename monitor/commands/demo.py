"""`slat-monitor demo`: train the SLAT VAE example with a known failure, watched, then print the diagnosis.

Default: the tiny config in `fp16-naive` with `eps-underflow` (TRELLIS #162) for 50 steps on the
CPU, with a run record under ./runs/ and no metrics endpoint unless `--port` is given. Needs the
`trainer` extra (spconv). The trainer is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..terminal import printable

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Train the tiny SLAT VAE example on synthetic voxels with a known mixed-precision failure, watched
by slat-monitor (monitor.watch), write a run record under ./runs/, and print the diagnosis.
Default: --precision fp16-naive --fault eps-underflow (TRELLIS #162: AdamW's eps 1e-8 vanishes in
fp16 optimizer state and every fp16 block parameter is NaN/Inf after step 1).
Try --fault overflow|loss-nan|lr-spike|underflow (with --precision auto), or --eps 1e-4 for the fix.
Full option list and fault signatures: python -m monitor.example.train --help
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from monitor.example.train import add_training_args

    p = subparsers.add_parser(
        "demo",
        help="train the SLAT VAE example with a known failure, watched, and print the diagnosis",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_args(p, steps=50, port=None, precision="fp16-naive", fault="eps-underflow")
    p.add_argument(
        "--record", default=None, help="run record path; default runs/demo-<fault>-<time>.sqlite (never reused)"
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary and the diagnosis")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print the whole diagnosis: every evidence line, per-layer details, every fix's code")
    return p


def _default_record(fault: str) -> str:
    return str(Path("runs") / f"demo-{fault}-{time.strftime('%Y%m%d-%H%M%S')}.sqlite")


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when it ran (whatever the diagnosis says), 2 for bad settings."""
    from monitor.example.train import config_from_args, run_and_report

    record = args.record or _default_record(args.fault)
    cfg = config_from_args(args, watch=True, record=record)
    print(
        f"slat-monitor demo: {cfg.config} SLAT VAE, precision {cfg.precision}, fault {cfg.fault}, "
        f"{cfg.steps} steps, record {printable(record)}",
        flush=True,
    )
    try:
        run_and_report(cfg, quiet=args.quiet, verbose=args.verbose)
    except ValueError as exc:
        print(f"slat-monitor demo: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the metrics port is taken
        port_hint = "; pass --port 0 (any free port) or --port none" if cfg.port else ""
        print(f"slat-monitor demo: error: {printable(exc)}{port_hint}", file=sys.stderr)
        return 2
    return 0
