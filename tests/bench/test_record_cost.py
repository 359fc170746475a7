"""bench.record_cost on tiny sizes: both codes write and read, the Histories agree, sizes are counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_record_cost_compares_a_git_ref_with_the_tree():
    out = subprocess.run([sys.executable, "-m", "bench.record_cost", "--ref", "HEAD", "--layers", "5",
                          "--steps", "200", "--real-steps", "2", "--repeats", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = out.stdout.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "5" and row[2].strip() == "200" and row[-2].strip() == "yes", out.stdout
    assert all(float(cell.split()[0].replace(",", "")) > 0 for cell in row[3:5]), row  # sizes per 1,000 steps
