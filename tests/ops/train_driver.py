"""A watched trainer_example run for the end-to-end tests, through the trainer's public Python API.

    python -m tests.ops.train_driver --fault eps-underflow --run NAME --record PATH --stop-file PATH

`monitor.example.train.run(cfg, on_step=...)` with `watch=True` (monitor.watch inside, announced to
Prometheus through SLATMON_TARGETS_DIR). `on_step` paces the steps and, after the last one, keeps the
process - and so the watcher and its /metrics endpoint - alive until the test creates `--stop-file`
(or `--max-linger` seconds pass): a tiny run is faster than a few 1 s scrapes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.ops.train_driver")
    p.add_argument("--fault", default="none")
    p.add_argument("--run", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--step-delay", type=float, default=0.1, help="seconds to sleep after each step")
    p.add_argument("--stop-file", required=True, help="linger after the last step until this file exists")
    p.add_argument("--max-linger", type=float, default=120.0)
    args = p.parse_args(argv)

    from monitor.example.train import TrainConfig, run

    def on_step(record: object) -> None:
        time.sleep(args.step_delay)
        if getattr(record, "step", 0) == args.steps:
            print(f"last step done; lingering until {args.stop_file} exists", flush=True)
            deadline = time.monotonic() + args.max_linger
            while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
                time.sleep(0.1)

    cfg = TrainConfig(config="tiny", fault=args.fault, steps=args.steps, watch=True, port=0, run=args.run,
                      record=args.record, device="cpu")
    result = run(cfg, on_step=on_step)
    print(f"done: {len(result.steps)} steps, precision {result.precision}, served at {result.url}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
