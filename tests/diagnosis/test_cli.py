"""`slat-monitor diagnose` end to end: `python -m monitor diagnose ...` in a subprocess on real records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.realservers import free_port

from .runs import watched_run

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "monitor", "diagnose", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("records")
    watched_run(folder / "broken.sqlite", eps=1e-8)
    watched_run(folder / "healthy.sqlite", dtype=torch.float32, steps=5)
    return {"broken": folder / "broken.sqlite", "healthy": folder / "healthy.sqlite", "dir": folder}


def test_broken_record_text(records: dict[str, Path]) -> None:
    out = cli(str(records["broken"]))
    assert out.returncode == 1, out.stderr
    first = out.stdout.split("\n1. ")[1]
    assert first.startswith("[CRITICAL] adam_eps_underflow, step 1:")
    assert "torch.optim.AdamW(master, lr=0.0001" in out.stdout  # a concrete snippet
    assert "layers: blocks.0, blocks.2" not in first and "--verbose" in out.stdout  # short by default
    assert out.stderr == ""
    full = cli(str(records["broken"]), "--verbose").stdout
    assert "layers: blocks.0, blocks.2" in full and "per layer:" in full
    assert full.count('group["eps"] = 0.0001') == 1  # every snippet, each once (a repeat says "same fix as")


def test_broken_record_json(records: dict[str, Path]) -> None:
    out = cli(str(records["broken"]), "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"] == "critical" and doc["last_step"] == 3
    top = doc["findings"][0]
    assert (top["code"], top["first_step"], top["layers"]) == ("adam_eps_underflow", 1, ["blocks.0", "blocks.2"])
    assert top["fixes"][0]["kind"] == "dtype"


def test_healthy_record_exits_0(records: dict[str, Path]) -> None:
    out = cli(str(records["healthy"]), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [f for f in json.loads(out.stdout)["findings"] if f["severity"] == "critical"]


def test_healthy_record_text_is_one_line_each(records: dict[str, Path]) -> None:
    """The healthy report ends with a newline like every other report (issue 15: the shell prompt used to
    land on the "healthy" line)."""
    out = cli(str(records["healthy"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.endswith("\nhealthy: no findings.\n") and out.stdout.count("\n") == 2, out.stdout


@pytest.mark.parametrize("case", ["missing", "not_a_record", "no_args", "unreachable"])
def test_bad_input_exits_2_with_one_line(records: dict[str, Path], case: str) -> None:
    bogus = records["dir"] / "notes.txt"
    bogus.write_text("not sqlite\n")
    args = {"missing": [str(records["dir"] / "nope.sqlite")], "not_a_record": [str(bogus)], "no_args": [],
            "unreachable": ["--prometheus", f"http://127.0.0.1:{free_port()}", "--run", "x"]}[case]
    out = cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slat-monitor diagnose: error: "), out.stderr
    assert "Traceback" not in out.stderr
    expected = {"missing": "no run record", "not_a_record": "not a slat-monitor run record",
                "no_args": "exactly one", "unreachable": "cannot reach Prometheus"}[case]
    assert expected in lines[0]
