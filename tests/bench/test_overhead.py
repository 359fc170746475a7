"""The benchmarks run end to end on tiny sizes and print their tables (timings are never asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 300) -> str:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                     "WANDB_SILENT": "true"}).stdout


def _rows(out: str) -> list[list[str]]:
    headers = ("| variant", "| op", "| per sampled step", "| sampled step")
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith(headers)]


def test_overhead_runs_every_variant_interleaved(tmp_path):
    pytest.importorskip("wandb")
    out = _run("bench.overhead", "--workloads", "slat", "--steps", "2", "--warmup", "1",
               "--json", str(tmp_path / "rows.json"))
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["variant"] for r in rows] == list(VARIANTS)
    assert rows[0]["ratio"] == 1.0 and all(r["ratio"] > 0 and r["ratio_p25"] <= r["ratio_p75"] for r in rows)
    assert all(r["peak_mib"] > 0 and r["allocated_mib"] > 0 for r in rows)  # the memory pass ran
    table = [r[0] for r in _rows(out)]
    assert table == list(VARIANTS)


def test_overhead_variant_selection_by_prefix():
    out = _run("bench.overhead", "--workloads", "transformer", "--steps", "1", "--warmup", "0",
               "--variants", "floor", "per-param", "--no-memory")
    assert [r[0] for r in _rows(out)] == ["unwatched", "floor: foreach_norm + 1 transfer",
                                          "per-param norm().item()"]


def test_profile_step_reports_the_monitor_and_the_floor():
    out = _run("bench.profile_step", "--workload", "slat", "--steps", "2", "--top", "5")
    got = dict((r[0], r[1]) for r in _rows(out))
    assert float(got["monitor, every=1"]) > 0 and float(got["floor: foreach_norm + 1 transfer"]) > 0
    assert re.search(r"^\| aten::\w+ \| [\d.]+ \|$", out, re.M)  # the op table has rows


def test_sampler_ab_times_a_git_ref_against_the_tree():
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = _run("bench.sampler_ab", "--ref", "HEAD", "--workload", "slat", "--steps", "2")
    names = [r[0] for r in _rows(out)]
    assert names == ["HEAD, update_ratio=True", "HEAD, update_ratio=False", "now, update_ratio=True",
                     "now, update_ratio=False", "floor"]


def test_guard_benchmark_reports_each_setup():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "guard.py"), "--steps", "1", "--rounds", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=True).stdout
    rows = {r[0]: r[1:] for r in re.findall(r"^\| ([^|]+?) \|" + r" ([\d.]+) \|" * 8 + "$", out, re.M)}
    assert {"fp32 AdamW (foreach)", "fp32 AdamW fused", "fp16 AdamW (foreach), undo copy"} <= set(rows)
    assert float(rows["fp32 AdamW (foreach)"][6]) == 0.0  # fp32: no undo copy
    undo, params = (float(x) for x in rows["fp16 AdamW (foreach), undo copy"][6:8])
    assert undo > params  # parameters + AdamW's two moments (and the fp32 layers) are kept
