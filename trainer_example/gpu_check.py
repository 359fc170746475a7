"""GPU check: the `base` config (TRELLIS size) in `inflat_all` and `fp16-naive` on CUDA, with spconv's
CUDA path (its default algorithm), a few steps each; prints one JSON object per line.

    python -m monitor.example.gpu_check                      # base, inflat_all + fp16-naive, 6 steps
    python -m monitor.example.gpu_check --steps 4 --batch-size 1
    python -m monitor.example.gpu_check --device cpu --config tiny --steps 2   # dry run of this script

Lines: first `{"check": "env", ...}` (torch, CUDA, GPU, spconv versions), then one
`{"check": "mode", ...}` per mode with: mode, fault, eps, config, batch_size, voxels_per_batch,
first_step_ms (includes spconv's kernel tuning), ms_per_step (median over steps 2..; includes the
trainer's per-step finiteness checks, a few device syncs), losses, first_nonfinite_loss_step,
fp16_params, fp16/fp32_params_nonfinite_after_step1, fp16/fp32_params_nonfinite (at the end),
nonfinite_params_at_end, peak_memory_gib. A mode that fails (e.g. out of memory) prints
`{"check": "mode", "mode": ..., "error": ...}` and the exit status is 1. fp16-naive runs with
`eps-underflow` (eps 1e-8), so TRELLIS #162 should show after step 1: every fp16 param non-finite,
every fp32 param finite.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from .config import MODEL_PRESETS, TrainConfig, model_preset

__all__ = ["check_mode", "env_info", "main"]

MODE_FAULTS = {"inflat_all": "none", "fp16-naive": "eps-underflow", "amp": "none", "fp32": "none"}


def env_info(device: str) -> dict[str, Any]:
    """Versions and the device this check runs on."""
    import spconv

    info: dict[str, Any] = {
        "check": "env",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "spconv": getattr(spconv, "__version__", "?"),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["spconv_algo"] = "default (CUDA)"
    else:
        info["spconv_algo"] = "Native (CPU)"
    return info


def check_mode(mode: str, config: str, steps: int, device: str, batch_size: int | None) -> dict[str, Any]:
    """Train `config` in `mode` for `steps` steps; a JSON-ready dict of timing and finiteness."""
    from .loop import run

    mcfg = model_preset(config)
    if batch_size is not None:
        mcfg = replace(mcfg, batch_size=batch_size, pool_size=max(batch_size, 2))
    fault = MODE_FAULTS[mode]
    cfg = TrainConfig(
        config=config, precision=mode, fault=fault, steps=steps, device=device, track_update_ratio=False, model=mcfg
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []
    start = time.perf_counter()
    result = run(cfg, on_step=lambda _: stamps.append(time.perf_counter()))  # loss.item() syncs per step
    times = [b - a for a, b in zip([start, *stamps], stamps)]
    out = _summary(result, mode, fault, times)
    if device == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _summary(result: Any, mode: str, fault: str, times: list[float]) -> dict[str, Any]:
    params = dict(result.model.named_parameters())
    bad = [n for n, p in params.items() if not bool(torch.isfinite(p).all())]
    fp16 = [n for n, p in params.items() if p.dtype == torch.float16]
    losses = result.losses
    first = result.steps[0].nonfinite_params
    return {
        "check": "mode",
        "mode": mode,
        "fault": fault,
        "eps": result.eps,
        "config": result.config.config,
        "batch_size": result.config.model_config().batch_size,
        "voxels_per_batch": [s.voxels for s in result.steps],
        "steps": len(result.steps),
        "first_step_ms": round(1000 * times[0], 1),
        "ms_per_step": round(1000 * statistics.median(times[1:] or times), 1),
        "losses": [round(x, 5) if _finite(x) else None for x in losses],
        "first_nonfinite_loss_step": next((i + 1 for i, x in enumerate(losses) if not _finite(x)), None),
        "nonfinite_params_at_end": len(bad),
        "fp16_params": len(fp16),
        "fp16_params_nonfinite": sum(n in bad for n in fp16),
        "fp32_params_nonfinite": sum(n not in fp16 for n in bad),
        "fp16_params_nonfinite_after_step1": sum(n in fp16 for n in first),
        "fp32_params_nonfinite_after_step1": sum(n not in fp16 for n in first),
    }


def _finite(x: float) -> bool:
    return math.isfinite(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m monitor.example.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", choices=sorted(MODEL_PRESETS), default="base")
    p.add_argument("--modes", nargs="+", choices=sorted(MODE_FAULTS), default=["inflat_all", "fp16-naive"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"check": "env", "error": "no CUDA device (torch.cuda.is_available() is False)"}))
        return 1
    print(json.dumps(env_info(args.device)), flush=True)
    failed = False
    for mode in args.modes:
        try:
            line = check_mode(mode, args.config, args.steps, args.device, args.batch_size)
        except Exception as exc:  # report and go on to the next mode (e.g. CUDA out of memory)
            line, failed = {"check": "mode", "mode": mode, "error": f"{type(exc).__name__}: {exc}"}, True
        print(json.dumps(line), flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
