"""Real watched runs for the dashboard tests: tiny models trained under monitor.watch (CPU, < 1 s each)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import monitor
from tests.models import Fp16Blocks
from tests.models import watched_run as _watched_run

EPS_RUN, HEALTHY_RUN = "eps-162", "healthy"


def watched_run(record: Path | None, *, run: str, dtype: torch.dtype = torch.float16, eps: float = 1e-8,
                steps: int = 6, port: int | None = None,
                between: Callable[[int, monitor.Watcher], None] | None = None) -> None:
    """tests.models.watched_run with the dashboard's defaults (6 steps, lr 1e-3)."""
    _watched_run(record, run=run, dtype=dtype, eps=eps, lr=1e-3, steps=steps, port=port, between=between)


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


def plain(markdown: str) -> str:
    """What Streamlit shows for text passed through monitor.dashboard.mdtext.escape: the escapes and the
    invisible word joiners undone."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")
