"""Small models and watched runs shared by the test packages (real monitor.watch, CPU, < 1 s each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import monitor


class Fp16Blocks(nn.Module):
    """`dtype` blocks between fp32 input and output layers, like TRELLIS's convert_to_fp16()
    (float16: the TRELLIS #162 shape; float32: a healthy model)."""

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.input_layer = nn.Linear(16, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)).to(dtype)
        self.out_layer = nn.Linear(32, 1)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.blocks(self.input_layer(x).to(self.dtype)).float())


def batch(seed: int = 0, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randn(n, 1, generator=g)


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: Any = None) -> None:
    """Backward and update: through `scaler` (a GradScaler) when given, else plain."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


def watched_step(model: nn.Module, opt: torch.optim.Optimizer, w: monitor.Watcher, step: int) -> None:
    """One plain training step on `batch(step)` (MSE, loss observed, AdamW or any optimizer)."""
    x, y = batch(step)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    w.observe_loss(loss)
    loss.backward()
    opt.step()


def watched_run(record: Path | None, *, run: str = "test", dtype: torch.dtype = torch.float16, eps: float = 1e-8,
                lr: float = 1e-4, steps: int = 3, port: int | None = None,
                between: Callable[[int, monitor.Watcher], None] | None = None) -> monitor.Watcher:
    """`steps` AdamW steps of Fp16Blocks under monitor.watch (record and/or /metrics on `port`);
    `between(step, watcher)` runs after each step. Returns the closed watcher."""
    torch.manual_seed(0)
    model = Fp16Blocks(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=eps)
    with monitor.watch(model, opt, port=port, record=None if record is None else str(record), run=run) as w:
        for step in range(1, steps + 1):
            watched_step(model, opt, w, step)
            if between is not None:
                between(step, w)
    return w


def scraping_prometheus(servers, targets: Path, *, name: str) -> tuple[str, Callable[[str], Callable],
                                                                       Callable[[], None]]:
    """(URL of a real Prometheus with 1 s scrapes over the file_sd folder `targets`, started by the
    `servers` fixture; `waiter(run)`: a `between(step, watcher)` callback that registers the watcher's
    endpoint and waits until Prometheus has scraped that step; `release()`: remove every target file
    registered, which also gives back the SIGTERM handler a registration installs)."""
    from monitor.ops.configs import prometheus_config
    from tests.realservers import http_json

    server = servers.prometheus(prometheus_config(targets_glob=str(targets / "*.json"), rule_globs=(),
                                                  alertmanager=None, interval="1s"), name=name)

    registered: list = []

    def release() -> None:
        while registered:
            registered.pop().remove()

    def waiter(run: str) -> Callable[[int, monitor.Watcher], None]:
        from monitor.ops.targets import register
        from tests.realservers import wait_until

        mine: list = []

        def scraped(step: int) -> bool:
            body = http_json(f"{server.url}/api/v1/query?query=slatmon_step%7Brun%3D%22{run}%22%7D")
            return any(float(r["value"][1]) >= step for r in body["data"]["result"])

        def between(step: int, w: monitor.Watcher) -> None:
            if not mine:
                mine.append(register(targets, "127.0.0.1", int(w.url.rsplit(":", 1)[1].split("/")[0]), run))
                registered.extend(mine)
            seen = w.counters.step  # a hand-made scale's skip shows at the next forward: wait for what was seen
            wait_until(lambda: scraped(seen), timeout=60, what=f"a scrape of step {seen} of {run}")

        return between

    return server.url, waiter, release


def prometheus_with_run(servers, targets: Path, run: str, *, name: str, steps: int = 3, **run_kwargs) -> str:
    """URL of a real Prometheus (1 s scrapes, started by the `servers` fixture) that has scraped every
    step of `watched_run(run=run, steps=steps, **run_kwargs)`: the run waits for each scrape."""
    url, waiter, release = scraping_prometheus(servers, targets, name=name)
    watched_run(None, run=run, steps=steps, port=0, between=waiter(run), **run_kwargs)
    release()
    return url
