"""The 10,000-layer case before/after: a git ref's watcher against the working tree's, interleaved.

    python -m bench.scale_ab --ref 0c7893b [--layers 10000] [--steps 20] [--rounds 6]

The ref's `monitor/` is imported as `monitor_ref` (bench/sampler_ab.py). Each side watches its own
copy of the same model (every=1, its HTTP endpoint on, no record):
- "layers": `--layers` one-tensor layers (`blocks.N.proj`) with max_layers = that count, so all are
  exported (the issue's max_layers=20000 case);
- "default": 10,000 tensors (`layers.0` ... `layers.4999`, weight and bias) at the default max_layers.
After `--steps` warm-up steps (history for the rules), each round trains one step per side (the side
order alternates) and times: the monitor's own time in that step (`slatmon_monitor_seconds_total`),
a scrape right after it, and a repeat scrape. Before the other side's step, the side's background
preparation (now: export/prepare.py) is let finish, so one side's threads never slow the other's step;
its cost is reported beside ("prepared off the scrape path": per-layer text + rules). "served" says
whether the scrape right after a step showed that step (`slatmon_sampled_step`) or the one before.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .export_cost import _layers_model
from .sampler_ab import _import_ref

__all__ = ["main", "measure"]


class Wide(nn.Module):
    """`layers.0` ... `layers.{n-1}`, Linear(2, 2) each: 2n tiny tensors under one parent."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.layers]).sum(0)


def _scrape(url: str) -> tuple[float, int | None]:
    """(seconds, the sampled step the body describes)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    seconds = time.perf_counter() - t0
    m = re.search(rb"^slatmon_sampled_step\{[^}]*\} (\S+)$", body, re.M)
    return seconds, int(float(m.group(1))) if m else None


class Side:
    """One watcher (of `mod`, the ref's package or the tree's) on its own model copy."""

    def __init__(self, mod: ModuleType, model: nn.Module, max_layers: int) -> None:
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.w = mod.watch(model, self.opt, port=0, max_layers=max_layers, run="scale")  # type: ignore[attr-defined]
        self.x = torch.randn(4, 2)
        self.rows: dict[str, list[float]] = {"monitor": [], "scrape": [], "repeat": [], "prepared": [], "behind": []}

    def step(self) -> float:
        before = self.w.counters.monitor_seconds
        self.opt.zero_grad()
        loss = self.model(self.x).pow(2).mean()
        self.w.observe_loss(loss)
        loss.backward()
        self.opt.step()
        return self.w.counters.monitor_seconds - before

    def round(self) -> None:
        self.rows["monitor"].append(self.step())
        seconds, served = _scrape(self.w.url)
        self.rows["scrape"].append(seconds)
        self.rows["behind"].append(self.w.counters.step - (served or 0))
        self.rows["repeat"].append(_scrape(self.w.url)[0])
        self.rows["prepared"].append(self._settle())

    def _settle(self) -> float:
        """Wait (untimed) until this side's background preparation served the step; its cost in s."""
        preparer = getattr(getattr(self.w, "_server", None), "preparer", None)
        if preparer is None:
            return 0.0  # the ref prepares inside the scrape
        while _scrape(self.w.url)[1] != self.w.counters.step or preparer._state.version != self.w.tracker.version:
            time.sleep(0.05)
        state = preparer._state
        return state.layer_seconds + state.rules_seconds

    def close(self) -> None:
        self.w.close()


def measure(mods: dict[str, ModuleType], make: Callable[[], nn.Module], max_layers: int, steps: int,
            rounds: int) -> dict[str, dict[str, list[float]]]:
    sides = {}
    for tag, mod in mods.items():
        torch.manual_seed(0)
        sides[tag] = Side(mod, make(), max_layers)
    try:
        for side in sides.values():
            for _ in range(steps):
                side.step()
            _scrape(side.w.url)
            side._settle()
        order = list(sides)
        for r in range(rounds):
            for tag in order[r % 2:] + order[:r % 2]:
                sides[tag].round()
        return {tag: s.rows for tag, s in sides.items()}
    finally:
        for s in sides.values():
            s.close()


def _row(case: str, tag: str, rows: dict[str, list[float]], base: dict[str, list[float]] | None) -> str:
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratio: dict[str, Any] = {k: "" for k in med}
    if base is not None:
        ratio = {k: f" ({med[k] / statistics.median(base[k]):.2f}x)" if statistics.median(base[k]) else ""
                 for k in med}
    behind = "the step before" if med["behind"] >= 1 else "that step"
    return (f"| {case} | {tag} | {1e3 * med['monitor']:.0f} ms{ratio['monitor']} | {1e3 * med['scrape']:.0f} ms"
            f"{ratio['scrape']} | {behind} | {1e3 * med['repeat']:.0f} ms{ratio['repeat']} | "
            f"{1e3 * med['prepared']:.0f} ms | |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scale_ab", description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="git commit or branch to compare with")
    p.add_argument("--layers", type=int, default=10000)
    p.add_argument("--steps", type=int, default=20, help="warm-up steps per side (history for the rules)")
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    import monitor

    with tempfile.TemporaryDirectory(prefix="slatmon-scale-") as tmp:
        old, _ = _import_ref(a.ref, Path(tmp))
        mods = {a.ref: __import__("monitor_ref"), "now": monitor}
        del old
        cases = [(f"{a.layers:,} layers (max_layers={a.layers})", lambda: _layers_model(a.layers), a.layers),
                 (f"{a.layers:,} tensors, default max_layers", lambda: Wide(a.layers // 2), 512)]
        print(f"torch={torch.__version__} steps={a.steps} rounds={a.rounds} every=1 (medians; ratio to {a.ref})\n")
        print("| case | monitor | monitor time per sampled step | scrape right after the step | data served "
              "| repeat scrape | prepared off the scrape path | record size per 1,000 steps |\n"
              "|---|---|---|---|---|---|---|---|")
        for case, make, max_layers in cases:
            res = measure(mods, make, max_layers, a.steps, a.rounds)
            print(_row(case, a.ref, res[a.ref], None), flush=True)
            print(_row(case, "now", res["now"], res[a.ref]), flush=True)


if __name__ == "__main__":
    main()
