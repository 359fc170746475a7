"""Launching real `torchrun` jobs (2 ranks, gloo, CPU) from the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
JOB_TIMEOUT_S = 240


def env(**extra: str) -> dict[str, str]:
    """The environment of a job: one CPU thread per rank, the repository importable."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}
    e.pop("SLATMON_RUN", None)
    return e


def argv(*args: str, nproc: int = 2) -> list[str]:
    if TORCHRUN is None:
        pytest.skip("torchrun not found next to the interpreter")
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", *args]


def launch(*args: str, cwd: Path, nproc: int = 2, **extra: str) -> subprocess.Popen[str]:
    """Start `torchrun --standalone --nproc_per_node N ARGS` (output merged, as text)."""
    return subprocess.Popen(argv(*args, nproc=nproc), cwd=cwd, env=env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    """Wait for the job; its output (AssertionError with it when the job failed)."""
    out, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    assert proc.returncode == 0, out[-4000:]
    return out


def job(*args: str, cwd: Path, nproc: int = 2, **extra: str) -> str:
    return finish(launch(*args, cwd=cwd, nproc=nproc, **extra))
