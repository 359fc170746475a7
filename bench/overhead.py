"""Monitor overhead, side by side in one run: unwatched vs watched (every=1, every=10, no update ratio, guard).

    python bench/overhead.py [--workload mlp|slat] [--steps 30] [--rounds 3] [--device auto]

Rounds interleave the variants so drift (thermal, other load) hits them alike. Reports the median
step time of each variant and its ratio to the unwatched run; ratios are what to compare across
machines. `slat` is trainer_example's tiny SLAT VAE (spconv); `mlp` a dense fp16-block MLP.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import monitor

VARIANTS: dict[str, dict | None] = {
    "unwatched": None,
    "watch every=1": {"every": 1},
    "watch every=10": {"every": 10},
    "watch every=1, update_ratio=False": {"every": 1, "update_ratio": False},
    "watch every=10, on_nonfinite=skip": {"every": 10, "on_nonfinite": "skip"},  # the guard (bench/guard.py)
}


def mlp_workload(device: torch.device) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = nn.Sequential(nn.Linear(512, 1024), *[m for _ in range(6) for m in (nn.GELU(), nn.Linear(1024, 1024))],
                          nn.Linear(1024, 1)).to(device)
    model[1:-1].to(dtype)
    x = torch.randn(256, 512, device=device)

    def loss() -> torch.Tensor:
        h = model[0](x).to(dtype)
        for layer in model[1:-1]:
            h = layer(h)
        return model[-1](h.float()).pow(2).mean()

    return model, loss


def slat_workload(device: torch.device) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    """trainer_example's tiny SLAT VAE (fp32 weights), one fixed batch."""
    from trainer_example.config import TrainConfig
    from trainer_example.data import SyntheticVoxels
    from trainer_example.losses import vae_loss
    from trainer_example.model import SlatVAE

    torch.manual_seed(0)
    cfg = TrainConfig(config="tiny").model_config()
    model = SlatVAE(cfg, native=device.type != "cuda").to(device)
    batch = SyntheticVoxels(cfg, 0, device).batch(0)
    return model, lambda: vae_loss(model(batch.x), batch).total


def time_variant(make, device: torch.device, options: dict | None, steps: int) -> list[float]:
    model, loss_fn = make(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)
    w = monitor.watch(model, opt, port=None, run="bench", **options) if options is not None else None
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        if w is not None:
            w.observe_loss(loss)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    if w is not None:
        w.close()
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=("mlp", "slat"), default="mlp")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    make = mlp_workload if a.workload == "mlp" else slat_workload
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(a.rounds):
        for name, options in VARIANTS.items():
            results[name] += time_variant(make, device, options, a.steps)
    base = statistics.median(results["unwatched"])
    print(f"workload={a.workload} device={device} torch={torch.__version__} steps={a.steps}x{a.rounds}")
    print("| variant | median step (ms) | ratio to unwatched |\n|---|---|---|")
    for name, ts in results.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
