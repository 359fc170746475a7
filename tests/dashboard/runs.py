"""Real watched runs for the dashboard tests: tiny models trained under monitor.watch (CPU, < 1 s each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import monitor

EPS_RUN, HEALTHY_RUN = "eps-162", "healthy"


class Fp16Blocks(nn.Module):
    """fp16 blocks between fp32 input and output layers (TRELLIS #162's shape); `dtype` float32 = healthy."""

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.input_layer = nn.Linear(16, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)).to(dtype)
        self.out_layer = nn.Linear(32, 1)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.blocks(self.input_layer(x).to(self.dtype)).float())


def watched_run(record: Path | None, *, run: str, dtype: torch.dtype = torch.float16, eps: float = 1e-8,
                steps: int = 6, port: int | None = None,
                between: Callable[[int, monitor.Watcher], None] | None = None) -> None:
    """`steps` AdamW steps of Fp16Blocks under monitor.watch (record and/or /metrics on `port`);
    `between(step, watcher)` runs after each step."""
    torch.manual_seed(0)
    model = Fp16Blocks(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
    with monitor.watch(model, opt, port=port, record=None if record is None else str(record), run=run) as w:
        for step in range(1, steps + 1):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(32, 16, generator=g), torch.randn(32, 1, generator=g)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
            if between is not None:
                between(step, w)


def eps_underflow_record(path: Path) -> Path:
    """fp16 blocks + AdamW eps=1e-8: every fp16 parameter is NaN after step 1 (adam_eps_underflow)."""
    watched_run(path, run=EPS_RUN)
    return path


def healthy_record(path: Path) -> Path:
    """The same model in fp32: no findings."""
    watched_run(path, run=HEALTHY_RUN, dtype=torch.float32)
    return path


def preflight_record(path: Path) -> Path:
    """fp16 blocks + AdamW eps=1e-8 watched, closed before any step: pre-flight findings only."""
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-8)
    monitor.watch(model, opt, port=None, record=str(path), run="preflight").close()
    return path


def loss_scale_record(path: Path, *, steps: int = 40, blow_up_at: int = 10) -> Path:
    """fp32 model under a GradScaler whose loss jumps to ~1e38 at `blow_up_at`: scaled gradients overflow,
    the scaler skips ~15 steps in a row and halves the scale each time (loss_scale_collapse)."""
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    with monitor.watch(model, opt, scaler=scaler, port=None, record=str(path), run="scaler") as w:
        for step in range(1, steps + 1):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(32, 16, generator=g), torch.randn(32, 1, generator=g)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y) * (1e38 if step >= blow_up_at else 1.0)
            w.observe_loss(loss)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return path
