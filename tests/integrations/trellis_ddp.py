"""torchrun driver: the TRELLIS stand-in under DDP (gloo, CPU), watched by watch_trellis with watch()'s
per-rank defaults. argv: OUT_DIR MODE. Writes OUT_DIR/truth-<rank>.json (the loop's own skipped
steps) next to the record OUT_DIR/trellis-<rank>.sqlite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from monitor.integrations.trellis import watch_trellis
from tests.integrations.trellis_standin import StandInTrainer


def main(out: Path, mode: str) -> None:
    torch.distributed.init_process_group("gloo")
    trainer = StandInTrainer(None if mode == "none" else mode, max_steps=8, bad_steps=(3, 4))
    with watch_trellis(trainer, port=None, run="trellis-ddp", record=str(out / "trellis-{rank}.sqlite")) as w:
        trainer.run()
    rank = torch.distributed.get_rank()
    (out / f"truth-{rank}.json").write_text(json.dumps({"skipped": trainer.truth.skipped, "rank": w.rank,
                                                        "errors": w.counters.errors}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
