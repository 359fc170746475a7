"""Cost of the guard (`on_nonfinite="skip"`), side by side in one run, per set-up.

    python bench/guard.py [--steps 30] [--rounds 3] [--device auto] [--ranks 1|2]

For each set-up (parameter dtype x optimizer implementation) three variants are timed in interleaved
rounds: unwatched, `watch(every=10)` (warn: today's monitor) and `watch(every=10, on_nonfinite="skip")`.
The guard's own cost: the ratio skip / warn, and the time measured inside its hooks (less sensitive
to a noisy machine than a difference of two step times). Set-ups with 16-bit parameters or optimizer
state keep the undo copy (its size is reported next to the parameters' own bytes); fp32 set-ups only
check the gradients, and fused optimizers take that check as a device-side found_inf (no host sync).
`--ranks 2` runs the same in two gloo processes (CPU): every guarded step all-reduces its flag.
The workload is a 4.5M-parameter MLP on a batch of 16, so the optimizer step weighs in (worst case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import monitor

VARIANTS: dict[str, dict | None] = {
    "unwatched": None,
    "warn": {"every": 10},
    "skip": {"every": 10, "on_nonfinite": "skip"},
}
SETUPS = {  # name: (parameter dtype of the hidden blocks, AdamW fused?)
    "fp32 AdamW (foreach)": (torch.float32, False),
    "fp32 AdamW fused": (torch.float32, True),
    "fp16 AdamW (foreach), undo copy": (torch.float16, False),
    "fp16 AdamW fused, undo copy": (torch.float16, True),
}


def workload(device: torch.device, dtype: torch.dtype, fused: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), *[m for _ in range(4) for m in (nn.GELU(), nn.Linear(1024, 1024))],
                          nn.Linear(1024, 1)).to(device)
    model[1:-1].to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4, fused=fused or None)
    x = torch.randn(16, 256, device=device)  # small batch: the optimizer step weighs in (worst case)

    def loss() -> torch.Tensor:
        h = model[0](x).to(dtype)
        for layer in model[1:-1]:
            h = layer(h)
        return model[-1](h.float()).pow(2).mean()

    return model, opt, loss


def time_variant(device: torch.device, setup: tuple[torch.dtype, bool], options: dict | None,
                 steps: int) -> tuple[list[float], float, int]:
    """Step times, the guard's own seconds per step (inside its hooks), the undo copy's bytes."""
    model, opt, loss_fn = workload(device, *setup)
    w = monitor.watch(model, opt, port=None, run="bench", **options) if options is not None else None
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    undo, guard_s = 0, 0.0
    if w is not None:
        if w._guard is not None:
            undo, guard_s = w._guard.guard.undo_bytes, w._guard.seconds / (steps + 3)
        w.close()
    return times, guard_s, undo


def measure(device: torch.device, steps: int, rounds: int) -> list[str]:
    lines = ["| set-up | unwatched (ms) | warn (ms) | skip (ms) | skip / warn | guard (ms/step) | guard / warn step "
             "| undo copy (MiB) | params (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, setup in SETUPS.items():
        if setup[1] and setup[0] == torch.float16 and device.type == "cpu" and not _fused_fp16_cpu():
            continue
        res: dict[str, list[float]] = {v: [] for v in VARIANTS}
        undo, guard = 0, []
        for _ in range(rounds):
            for v, options in VARIANTS.items():
                ts, g, u = time_variant(device, setup, options, steps)
                res[v] += ts
                undo = max(undo, u)
                if v == "skip":
                    guard.append(g * 1e3)
        med = {v: statistics.median(ts) * 1e3 for v, ts in res.items()}
        g_ms = statistics.median(guard)
        model, _, _ = workload(device, *setup)
        params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        lines.append(f"| {name} | {med['unwatched']:.2f} | {med['warn']:.2f} | {med['skip']:.2f} | "
                     f"{med['skip'] / med['warn']:.3f} | {g_ms:.2f} | {g_ms / med['warn']:.3f} | {undo / 2**20:.2f} | "
                     f"{params:.2f} |")
    return lines


def _fused_fp16_cpu() -> bool:
    p = nn.Parameter(torch.zeros(2, dtype=torch.float16))
    p.grad = torch.zeros(2, dtype=torch.float16)
    try:
        torch.optim.AdamW([p], fused=True).step()
        return True
    except RuntimeError:
        return False


def _rank_main(rank: int, init_file: str, steps: int, rounds: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    lines = measure(torch.device("cpu"), steps, rounds)
    if rank == 0:
        print("\n".join(lines))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--ranks", type=int, choices=(1, 2), default=1)
    a = p.parse_args(argv)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    print(f"guard cost: device={device} torch={torch.__version__} steps={a.steps}x{a.rounds} ranks={a.ranks}")
    if a.ranks == 1:
        print("\n".join(measure(device, a.steps, a.rounds)))
        return
    with tempfile.TemporaryDirectory() as tmp:  # two gloo processes on this machine's CPU
        mp.spawn(_rank_main, args=(os.path.join(tmp, "init"), a.steps, a.rounds), nprocs=2, join=True)


if __name__ == "__main__":
    main()
