"""The overhead benchmark runs and reports one ratio per variant (timings themselves are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_overhead_benchmark_reports_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "overhead.py"), "--steps", "1", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, check=True).stdout
    rows = re.findall(r"^\| (.+?) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert [r[0] for r in rows] == ["unwatched", "watch every=1", "watch every=10",
                                    "watch every=1, update_ratio=False", "watch every=10, on_nonfinite=skip"]
    assert float(rows[0][2]) == 1.0 and all(float(r[2]) > 0 for r in rows)


def test_guard_benchmark_reports_each_setup():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "guard.py"), "--steps", "1", "--rounds", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=True).stdout
    rows = {r[0]: r[1:] for r in re.findall(r"^\| ([^|]+?) \|" + r" ([\d.]+) \|" * 8 + "$", out, re.M)}
    assert {"fp32 AdamW (foreach)", "fp32 AdamW fused", "fp16 AdamW (foreach), undo copy"} <= set(rows)
    assert float(rows["fp32 AdamW (foreach)"][6]) == 0.0  # fp32: no undo copy
    undo, params = (float(x) for x in rows["fp16 AdamW (foreach), undo copy"][6:8])
    assert undo > params  # parameters + AdamW's two moments (and the fp32 layers) are kept
