"""Monitor overhead against its peers, side by side in one process, interleaved step by step.

    python -m bench.overhead                                  # CPU: slat, transformer, mlp
    python -m bench.overhead --workloads transformer --steps 40 --variants "watch every=1" floor
    python -m bench.overhead --device cuda                    # adds the `base` SLAT VAE (fp16 autocast)

Every variant trains its own copy of the model (same seed, same batch). Each measured step runs
every variant once, in an order rotated step by step, so drift and background load hit all alike;
a variant's ratio is taken to the unwatched step of the same round, and the table shows the
median and the interquartile range (p25-p75) of those paired ratios. Peak memory: see
bench/memory.py (a separate, profiled pass of one sampling period per variant).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .memory import StepMemory, step_memory
from .variants import VARIANTS, Variant, train_step
from .workloads import WORKLOADS, Job, make_job

__all__ = ["Row", "main", "measure"]


@dataclass
class Row:
    workload: str
    variant: str
    median_ms: float
    ratio: float  # median of the per-round ratios to unwatched
    ratio_p25: float
    ratio_p75: float
    peak_mib: float | None  # transient peak of one step (max over one sampling period)
    allocated_mib: float | None  # bytes allocated during one step (max over one sampling period)


def _quantiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def _timed(job: Job, variant: Variant) -> float:
    cuda = job.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_step(job, variant)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _progress(text: str) -> None:
    sys.stderr.write(f"\r{text:<78}")
    sys.stderr.flush()


def _interleaved(workload: str, pairs: list[tuple[Variant, Job]], steps: int, warmup: int) -> dict[str, list[float]]:
    """Step times per variant: each round runs every variant once, the order rotated round by round."""
    times: dict[str, list[float]] = {v.name: [] for v, _ in pairs}
    t_start = time.perf_counter()
    for i in range(warmup + steps):
        k = i % len(pairs)
        for variant, job in pairs[k:] + pairs[:k]:
            t = _timed(job, variant)
            if i >= warmup:
                times[variant.name].append(t)
        _progress(f"[{workload}] step {i + 1}/{warmup + steps} ({'warm-up' if i < warmup else 'timed'}), "
                  f"{time.perf_counter() - t_start:.0f} s")
    return times


def _memory(workload: str, pairs: list[tuple[Variant, Job]], device: torch.device) -> dict[str, StepMemory]:
    """One sampling period of each variant (every=10: 10 steps), profiled (bench/memory.py)."""
    out = {}
    for j, (variant, job) in enumerate(pairs):
        _progress(f"[{workload}] memory {j + 1}/{len(pairs)}: {variant.name}")
        period = getattr(variant, "options", {}).get("every", 1)
        out[variant.name] = step_memory(lambda v=variant, jb=job: train_step(jb, v), period, device)
    return out


def measure(workload: str, names: list[str], device: torch.device, steps: int, warmup: int,
            memory: bool, tmp: Path) -> list[Row]:
    """Time `names` (variants, "unwatched" first) on `workload`; one Row per variant."""
    pairs: list[tuple[Variant, Job]] = []
    (tmp / workload).mkdir(exist_ok=True)
    try:
        for name in names:
            variant, job = VARIANTS[name](), make_job(workload, device)
            variant.attach(job, tmp / workload)
            pairs.append((variant, job))
        times = _interleaved(workload, pairs, steps, warmup)
        peaks = _memory(workload, pairs, device) if memory else {}
    finally:
        for variant, _ in pairs:
            variant.close()
        _progress("")
        sys.stderr.write("\r")
    base = times["unwatched"]
    rows = []
    for name in names:
        p25, med, p75 = _quantiles([t / b for t, b in zip(times[name], base)])
        mem = peaks.get(name)
        rows.append(Row(workload, name, 1e3 * statistics.median(times[name]), med, p25, p75,
                        None if mem is None else mem.peak_bytes / 2**20,
                        None if mem is None else mem.allocated_bytes / 2**20))
    return rows


def table(rows: list[Row]) -> str:
    """Markdown table; the floor's overhead is the yardstick for the monitor's."""
    floor = next((r for r in rows if r.variant.startswith("floor")), None)
    out = ["| variant | median step (ms) | ratio to unwatched (median) | p25-p75 | overhead / floor's "
           "| step peak (MiB) | allocated per step (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs_floor = ("" if floor is None or r.variant == "unwatched" or floor.ratio <= 1.0 or r.ratio <= 1.0
                    else f"{(r.ratio - 1) / (floor.ratio - 1):.1f}x")  # within noise of 1.0: no figure
        peak = "" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        alloc = "" if r.allocated_mib is None else f"{r.allocated_mib:.1f}"
        out.append(f"| {r.variant} | {r.median_ms:.1f} | {r.ratio:.3f} | {r.ratio_p25:.3f}-{r.ratio_p75:.3f} "
                   f"| {vs_floor} | {peak} | {alloc} |")
    return "\n".join(out)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=None,
                   help="default: slat transformer mlp (+ slat-base on CUDA)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="names or unique prefixes of: " + ", ".join(repr(v) for v in VARIANTS))
    p.add_argument("--steps", type=int, default=30, help="timed steps (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    p.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory pass")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def _variant_names(wanted: list[str] | None) -> list[str]:
    if not wanted:
        if importlib.util.find_spec("wandb") is None:  # the `bench` extra is optional
            print("note: wandb is not installed (pip install -e '.[bench]'): its variant is left out",
                  file=sys.stderr)
            return [v for v in VARIANTS if not v.startswith("wandb")]
        return list(VARIANTS)
    names = ["unwatched"]
    for w in wanted:
        hits = [v for v in VARIANTS if v == w] or [v for v in VARIANTS if v.startswith(w)]
        if len(hits) != 1:
            raise SystemExit(f"--variants: {w!r} matches {hits or 'nothing'}; choose from {list(VARIANTS)}")
        if hits[0] not in names:
            names.append(hits[0])
    return names


def main(argv: list[str] | None = None) -> list[Row]:
    a = parse_args(argv)
    device = _device(a.device)
    torch.set_num_threads(a.threads)
    workloads = a.workloads or (["slat", "transformer", "mlp"] + (["slat-base"] if device.type == "cuda" else []))
    names = _variant_names(a.variants)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="slatmon-bench-") as tmp:
        for w in workloads:
            got = measure(w, names, device, a.steps, a.warmup, not a.no_memory, Path(tmp))
            rows += got
            print(f"\nworkload={w} device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
                  f"steps={a.steps} (+{a.warmup} warm-up), variants interleaved step by step")
            print(table(got), flush=True)
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
