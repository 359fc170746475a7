"""Worker of the 2-rank guard test: a real gloo process group, each rank trains the same model on the
same batches, except that rank 1 alone gets a NaN batch at step 3 (no DDP: nothing else would make
rank 0 skip). Writes its final weights, optimizer state and skipped steps to `out/rank{r}.pt`."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from .guard_runs import fp32_run, weights


def worker(rank: int, init_file: str, out: str, fused: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model, opt, w = fp32_run(8, nan_at=[3] if rank == 1 else [], fused=fused,
                                 watch={"on_nonfinite": "skip", "every": 4})
        skipped = [(s.step, s.skip_reason) for s in w.history().steps if s.skipped]
        torch.save({"weights": weights(model), "state": opt.state_dict(), "skipped": skipped,
                    "rank": w.rank, "errors": w.counters.errors}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
