"""Launched by tests under `torchrun --nproc_per_node 2`: DDP runs of the SLAT VAE in one real job.

    torchrun ... tests/trainer_example/ddp_driver.py OUT FAULT FAULT_RANK [plain]

With `plain`, first an unwatched run, then (always) a watched one with monitor.watch's defaults (port
9108 + LOCAL_RANK, a record per rank in OUT/run.sqlite, target files in $SLATMON_TARGETS_DIR). The
watched run holds its last step until the test creates OUT/go (so a real Prometheus can scrape every
rank while it is live). Each rank saves OUT/rank<N>.pt: losses, parameters, url, record path.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from tests.trainer_example.helpers import FIXED_BATCH, tiny
from trainer_example.loop import run

HOLD_S = 120


def main() -> None:
    out, fault, fault_rank = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.distributed.init_process_group("gloo")  # the trainer joins it and leaves it to us
    rank = torch.distributed.get_rank()
    cfg = tiny(precision="auto", fault=fault, fault_step=2, steps=3, port="auto",
               fault_rank=None if fault_rank == "all" else int(fault_rank), run="ddp-test",
               model=replace(FIXED_BATCH, pool_size=4))  # two batches: one per rank
    plain = run(cfg) if "plain" in sys.argv[4:] else None

    def hold(s: object) -> None:
        if getattr(s, "step", 0) == cfg.steps:
            deadline = time.monotonic() + HOLD_S
            while not (out / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    watched = run(cfg.with_(watch=True, record=str(out / "run.sqlite")), on_step=hold)
    torch.save({
        "url": watched.url, "record": watched.record, "skipped": [s.skipped for s in watched.steps],
        "watched": (watched.losses, {k: v.clone() for k, v in watched.model.state_dict().items()}),
        "plain": None if plain is None else (plain.losses, {k: v.clone() for k, v in plain.model.state_dict().items()}),
        "plain_skipped": None if plain is None else [s.skipped for s in plain.steps],
    }, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
