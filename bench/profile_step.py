"""Where a sampled step's time goes: the monitor's own time per step, and its ops, by the torch profiler.

    python -m bench.profile_step --workload transformer [--steps 20] [--device cpu]

Trains a watched copy (every=1, port=None) and reports the median of the monitor's own time per
step (`slatmon_monitor_seconds_total` increments: hook bodies in the training thread; on CUDA this
includes waiting, at the step's one transfer, for kernels still queued), beside the floor's (one
fused `_foreach_norm` over the gradients plus one transfer), then the profiler's top ops inside the
monitor's hooks (the op table of a profiled run minus an unwatched one's).
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

import monitor

from .memory import _quiet_stderr
from .variants import Floor, Variant, train_step
from .workloads import WORKLOADS, make_job

__all__ = ["main", "monitor_ms"]


def monitor_ms(workload: str, device: torch.device, steps: int, **options: object) -> list[float]:
    """The monitor's own time (ms) in each of `steps` watched steps (after 2 warm-up steps)."""
    job = make_job(workload, device)
    w = monitor.watch(job.model, job.optimizer, scaler=job.scaler, port=None, run="profile", **options)
    out = []
    try:
        for i in range(steps + 2):
            before = w.counters.monitor_seconds
            train_step(job, Variant("watched"))
            if i >= 2:
                out.append(1e3 * (w.counters.monitor_seconds - before))
    finally:
        w.close()
    return out


def floor_ms(workload: str, device: torch.device, steps: int) -> list[float]:
    import time

    job, floor = make_job(workload, device), Floor("floor")
    out = []
    for _ in range(steps):
        train_step(job, Variant("u"))
        if device.type == "cuda":  # time the floor's own work, not the step's queued kernels
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        floor.after_backward(job)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def op_table(workload: str, device: torch.device, steps: int, top: int) -> str:
    """Self CPU time per op in `steps` watched steps minus `steps` unwatched ones: the monitor's ops."""
    def run(watched: bool) -> Counter[str]:
        job = make_job(workload, device)
        w = monitor.watch(job.model, job.optimizer, scaler=job.scaler, port=None, run="p") if watched else None
        train_step(job, Variant("warm"))
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with _quiet_stderr(), profile(activities=acts) as prof:
            for _ in range(steps):
                train_step(job, Variant("p"))
        if w is not None:
            w.close()
        return Counter({e.key: e.self_cpu_time_total for e in prof.key_averages()})

    diff = run(True)
    diff.subtract(run(False))
    rows = [(k, v / steps / 1e3) for k, v in diff.most_common(top) if v > 0]
    return "\n".join(["| op | self CPU ms / step (watched - unwatched) |", "|---|---|"]
                     + [f"| {k} | {v:.2f} |" for k, v in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="transformer")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(a.device)
    med = lambda xs: f"{statistics.median(xs):.2f}"  # noqa: E731
    print(f"workload={a.workload} device={device} torch={torch.__version__} steps={a.steps}")
    print("| per sampled step | ms (median) |\n|---|---|")
    print(f"| monitor, every=1 | {med(monitor_ms(a.workload, device, a.steps))} |")
    print(f"| monitor, every=1, update_ratio=False | "
          f"{med(monitor_ms(a.workload, device, a.steps, update_ratio=False))} |")
    print(f"| floor: foreach_norm + 1 transfer | {med(floor_ms(a.workload, device, a.steps))} |")
    print()
    print(op_table(a.workload, device, max(2, a.steps // 4), a.top))


if __name__ == "__main__":
    main()
