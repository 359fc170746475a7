"""Run-record cost at scale: bytes per 1,000 sampled steps and the time to write and read them, the record
code of a git ref (schema 1 up to 0c7893b) against the working tree's, side by side in one process.

    python -m bench.record_cost --ref 0c7893b                     # 100 and 10,000 layers, every=1
    python -m bench.record_cost --ref 0c7893b --layers 100 --steps 1000

Rows: R real sampled steps (--real-steps) of a watched model of N layers (a Linear(4, 4) with bias each,
inputs scaled per layer, so every layer's numbers differ), written as S steps (step i gets the rows of
real step (i - 1) % R + 1) through each code's RecordWriter, then read back with each code's
read_record, and the ref's record with the tree's reader too (schema 1 still read). S defaults to 1,000
steps for 100 layers and 100 for 10,000 (10M LayerObs would need ~5 GB of memory to hold as a History);
sizes and times are scaled to 1,000 steps. Size: the file and any -wal/-shm left after close, less the
same record closed before its first step (run info and pre-flight findings: written once; "base").
Write: from the first put to the end of close() (the writer thread's work, off the training thread).
Reads: median of --repeats, the three interleaved. The Histories read by each code from its own record
are compared field by field.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

import monitor
from monitor.history import History, LayerObs

__all__ = ["main", "measure"]

ROOT = Path(__file__).resolve().parents[1]


def _import_ref(ref: str, into: Path) -> ModuleType:
    """The ref's `monitor.record` as `monitor_ref.record` (its `monitor/` exported with git archive)."""
    archive = subprocess.run(["git", "archive", ref, "monitor"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "monitor").rename(into / "monitor_ref")
    sys.path.insert(0, str(into))
    return importlib.import_module("monitor_ref.record")


class _Layers(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(n))
        self.register_buffer("scale", torch.rand(n) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x * s) for b, s in zip(self.blocks, self.scale.tolist()))  # type: ignore[return-value]


def real_steps(n: int, steps: int) -> tuple[History, dict[int, list[LayerObs]]]:
    """The History of `steps` watched AdamW steps of an `n`-layer model (every=1), and its rows by step."""
    torch.manual_seed(0)
    model = _Layers(n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=None, max_layers=n + 1, run=f"bench{n}") as w:
        for i in range(steps):
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            w.observe_loss(loss)
            loss.backward()
            opt.step()
        h = w.history()
    by_step: dict[int, list[LayerObs]] = {}
    for r in h.layers:
        by_step.setdefault(r.step, []).append(r)
    return h, by_step


def _write(record: ModuleType, path: Path, real: History, rows: dict[int, list[LayerObs]], steps: int) -> float:
    """Seconds to put `steps` steps through `record.RecordWriter` and close it (the rows are made in chunks
    of ~100,000 beforehand, outside the time)."""
    w = record.RecordWriter(str(path))
    w.put_meta("run", _run_for(record, dataclasses.asdict(real.run)))
    w.put_meta("preflight", [f.to_dict() for f in real.preflight])
    w.flush(600)
    chunk = max(1, 100_000 // max(len(r) for r in rows.values()))
    spent = 0.0
    for first in range(1, steps + 1, chunk):
        todo = []
        for i in range(first, min(first + chunk, steps + 1)):
            src = real.steps[(i - 1) % len(real.steps)]
            todo.append((dataclasses.replace(src, step=i), [dataclasses.replace(r, step=i) for r in rows[src.step]]))
        t0 = time.perf_counter()
        for obs, step_rows in todo:
            w.put_step(obs, step_rows, [])
        w.flush(600)
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    w.close(600)
    return spent + time.perf_counter() - t0


def _run_for(record: ModuleType, run: dict[str, Any]) -> dict[str, Any]:
    """The run info with only the fields `record`'s own RunInfo / LayerInfo know (a ref older than the
    working tree reads no field added since)."""
    history = importlib.import_module(record.__name__.rsplit(".", 1)[0] + ".history")
    run_fields = {f.name for f in dataclasses.fields(history.RunInfo)}
    layer_fields = {f.name for f in dataclasses.fields(history.LayerInfo)}
    out = {k: v for k, v in run.items() if k in run_fields}
    out["layers"] = {n: {k: v for k, v in li.items() if k in layer_fields} for n, li in run["layers"].items()}
    return out


def _common(a: Any, b: Any) -> tuple[Any, Any]:
    """`a` and `b` with every dict reduced to the keys both have (fields one code added are left out)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() & b.keys()
        pairs = {k: _common(a[k], b[k]) for k in keys}
        return {k: x for k, (x, _) in pairs.items()}, {k: y for k, (_, y) in pairs.items()}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = [_common(x, y) for x, y in zip(a, b)]
        return [x for x, _ in pairs], [y for _, y in pairs]
    return a, b


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _read(record: ModuleType, path: Path) -> tuple[float, History]:
    t0 = time.perf_counter()
    h = record.read_record(path)
    return time.perf_counter() - t0, h


def _same(a: History, b: History) -> bool:
    """Equal run, steps, layer rows and events (those the writers were given: no record_* events), field by
    field (the ref's dataclasses are other classes; NaN equal to NaN)."""
    def fields(h: History) -> dict[str, Any]:
        return dataclasses.replace(h, events=[e for e in h.events if not e.kind.startswith("record_")]).to_dict()

    x, y = _common(fields(a), fields(b))
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def measure(old: ModuleType, layers: int, steps: int, real: int, tmp: Path, repeats: int = 3) -> dict[str, Any]:
    """Sizes and times of one layer count, both codes (see the module docstring)."""
    from monitor import record as new

    h, rows = real_steps(layers, real)
    out: dict[str, Any] = {"layers": layers, "steps": steps, "rows": sum(len(rows[s.step]) for s in h.steps)}
    paths = {"ref": tmp / f"ref-{layers}.sqlite", "now": tmp / f"now-{layers}.sqlite"}
    for tag, code in (("ref", old), ("now", new)):
        _write(code, tmp / f"base-{tag}-{layers}.sqlite", h, rows, 0)  # run info and pre-flight only
        out[f"base_{tag}"] = _size(tmp / f"base-{tag}-{layers}.sqlite")
        out[f"write_{tag}"] = _write(code, paths[tag], h, rows, steps)
        out[f"bytes_{tag}"] = _size(paths[tag]) - out[f"base_{tag}"]
    reads: dict[str, list[float]] = {"read_ref": [], "read_now": [], "read_now_of_ref": []}
    for i in range(repeats):  # interleaved: the machine's load falls on both alike
        t, h_ref = _read(old, paths["ref"])
        reads["read_ref"].append(t)
        t, h_now = _read(new, paths["now"])
        reads["read_now"].append(t)
        if i == 0:
            out["same"] = _same(h_ref, h_now)
        del h_now
        t, h_again = _read(new, paths["ref"])
        reads["read_now_of_ref"].append(t)
        if i == 0:
            out["same_ref_read"] = _same(h_ref, h_again)
        del h_again, h_ref
    out.update({k: statistics.median(v) for k, v in reads.items()})
    return out


def _row(r: dict[str, Any]) -> str:
    k = 1000 / r["steps"]
    mib = lambda b: f"{b * k / 2**20:,.1f} MiB"  # noqa: E731
    sec = lambda s: f"{s * k:,.2f} s"  # noqa: E731
    return (f"| {r['layers']:,} | {r['steps']:,} | {mib(r['bytes_ref'])} | {mib(r['bytes_now'])} | "
            f"{r['bytes_ref'] / max(r['bytes_now'], 1):.1f}x | {sec(r['read_ref'])} | {sec(r['read_now'])} | "
            f"{r['read_ref'] / r['read_now']:.1f}x | {sec(r['read_now_of_ref'])} | {sec(r['write_ref'])} | "
            f"{sec(r['write_now'])} | {r['base_ref'] / 2**10:,.0f} / {r['base_now'] / 2**10:,.0f} KiB | "
            f"{'yes' if r['same'] and r['same_ref_read'] else 'NO'} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.record_cost", description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="git commit or branch whose record code to compare with")
    p.add_argument("--layers", type=int, nargs="+", default=[100, 10_000])
    p.add_argument("--steps", type=int, help="steps written per layer count (default: 1,000 for up to 1,000 "
                                              "layers, 100 above)")
    p.add_argument("--real-steps", type=int, default=3, help="real training steps whose rows are written")
    p.add_argument("--repeats", type=int, default=3, help="reads of each record, interleaved (median)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="slatmon-record-cost-") as tmp:
        old = _import_ref(a.ref, Path(tmp))
        print(f"record code of {a.ref} (ref) against the working tree (now); torch {torch.__version__}; "
              "per 1,000 sampled steps at every=1")
        print("| layers | steps written | size, ref | size, now | smaller | read, ref | read, now | faster | "
              "read of the ref's record, now | write, ref | write, now | base, ref / now | same History |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for n in a.layers:
            steps = a.steps or (1000 if n <= 1000 else 100)
            print(_row(measure(old, n, steps, a.real_steps, Path(tmp), a.repeats)), flush=True)


if __name__ == "__main__":
    main()
