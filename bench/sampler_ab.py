"""Before/after of the sampled step: the StepSampler of a git ref against the working tree's, interleaved.

    python -m bench.sampler_ab --ref 3cc3f2e --workload transformer [--steps 15]

The ref's `monitor/` package is exported with `git archive` into a temporary folder and imported as
`monitor_ref` (its imports are relative). Both samplers, with and without the update ratio, measure
the same gradients and optimizer state of one model in turn; `begin()` + `finish()` are timed
together (no optimizer step between them: the update measured is 0, the work is the same). The
floor (one fused `_foreach_norm` over the gradients + one transfer) is timed in the same rounds.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .variants import Variant, train_step
from .workloads import WORKLOADS, make_job

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _import_ref(ref: str, into: Path) -> tuple[object, object]:
    archive = subprocess.run(["git", "archive", ref, "monitor"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "monitor").rename(into / "monitor_ref")
    sys.path.insert(0, str(into))
    return importlib.import_module("monitor_ref.sampler"), importlib.import_module("monitor_ref.layers")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sampler_ab", description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="git commit or branch to compare with")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="transformer")
    p.add_argument("--steps", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    import monitor.layers as new_layers
    import monitor.sampler as new_sampler

    with tempfile.TemporaryDirectory(prefix="slatmon-ab-") as tmp:
        old_sampler, old_layers = _import_ref(a.ref, Path(tmp))
        job = make_job(a.workload, torch.device("cpu"))
        for _ in range(2):  # optimizer state exists
            train_step(job, Variant("warm"))
        job.optimizer.zero_grad()
        job.loss().backward()
        samplers = {}
        for tag, s_mod, l_mod in ((a.ref, old_sampler, old_layers), ("now", new_sampler, new_layers)):
            layers = l_mod.LayerMap.build(job.model, 512, None)  # type: ignore[attr-defined]
            for ratio in (True, False):
                samplers[f"{tag}, update_ratio={ratio}"] = s_mod.StepSampler(layers, job.optimizer, ratio)  # type: ignore[attr-defined]
        grads = job.grads()
        times: dict[str, list[float]] = {k: [] for k in [*samplers, "floor"]}
        for _ in range(a.steps):
            for name, s in samplers.items():
                t0 = time.perf_counter()
                s.begin(1, None, None)
                s.finish()
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).cpu()
            times["floor"].append(time.perf_counter() - t0)
    n = sum(p.numel() for p in job.model.parameters())
    print(f"workload={a.workload} params={n} tensors={len(grads)} torch={torch.__version__} rounds={a.steps}")
    print("| sampled step (begin + finish) | ms, median | p25-p75 |\n|---|---|---|")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        print(f"| {name} | {1e3 * statistics.median(ts):.2f} | {1e3 * q[0]:.2f}-{1e3 * q[2]:.2f} |")


if __name__ == "__main__":
    main()
