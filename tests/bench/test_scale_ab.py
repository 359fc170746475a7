"""bench/scale_ab.py end to end on tiny sizes: both cases, both sides, every column (timings never asserted)."""

from __future__ import annotations

import subprocess

import pytest

from .test_overhead import ROOT, _run


def test_scale_ab_prints_both_cases_for_the_ref_and_the_tree():
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = _run("bench.scale_ab", "--ref", "HEAD", "--layers", "60", "--steps", "1", "--rounds", "1")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| case")]
    assert [(r[0], r[1]) for r in rows] == [("60 layers (max_layers=60)", "HEAD"), ("60 layers (max_layers=60)", "now"),
                                            ("60 tensors, default max_layers", "HEAD"),
                                            ("60 tensors, default max_layers", "now")]
    assert all(r[2].endswith("ms") or "ms (" in r[2] for r in rows) and rows[1][2].endswith("x)")
