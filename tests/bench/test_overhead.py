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
                                    "watch every=1, update_ratio=False"]
    assert float(rows[0][2]) == 1.0 and all(float(r[2]) > 0 for r in rows)
