"""The run record survives a SIGKILL, and bad paths give clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from monitor import RecordError
from monitor.record import read_record

TRAIN = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import monitor
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = monitor.watch(model, opt, port=None, record=sys.argv[1], run="killed")
    step = 0
    while True:
        opt.zero_grad()
        loss = model(torch.randn(4, 8)).pow(2).mean()
        w.observe_loss(loss)
        loss.backward()
        opt.step()
        step += 1
        if step == 5:
            print("STEP5", flush=True)
""")


def test_sigkill_mid_run_leaves_a_readable_record(tmp_path):
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STEP5"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # let the writer thread commit a few more batches
            if path.exists() and len(read_record(path).steps) >= 10:
                break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    h = read_record(path)
    assert h.run.run == "killed" and h.run.optimizer == "AdamW"
    steps = [s.step for s in h.steps]
    assert len(steps) >= 10 and steps == list(range(1, len(steps) + 1))
    assert {r.layer for r in h.layer_rows(1)} == {"0", "2", "[output]"}


def test_missing_record_is_a_clear_error(tmp_path):
    with pytest.raises(RecordError, match="no run record at"):
        read_record(tmp_path / "nope.sqlite")


def test_not_a_record_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, not sqlite" * 100)
    with pytest.raises(RecordError, match="not a slat-monitor run record"):
        read_record(p)
    import sqlite3

    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(RecordError, match="not a slat-monitor run record"):
        read_record(other)


def test_existing_record_is_never_overwritten(tmp_path):
    import torch

    import monitor

    path = tmp_path / "run.sqlite"
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.watch(model, opt, port=None, record=path).close()
    size = path.stat().st_size
    with pytest.raises(monitor.ConfigError, match="already exists"):
        monitor.watch(model, opt, port=None, record=path)
    assert path.stat().st_size == size and read_record(path).run.optimizer == "SGD"


def test_nan_survives_the_record(tmp_path):
    import math

    import torch

    import monitor

    path = tmp_path / "nan.sqlite"
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, opt, port=None, record=path) as w:
        loss = model(torch.tensor([[float("nan"), 1.0, 1.0]])).sum()
        w.observe_loss(loss)
        loss.backward()
        opt.step()
    h = read_record(path)
    assert math.isnan(h.steps[0].loss) and math.isnan(h.steps[0].grad_norm_total)
    rows = {r.layer: r for r in h.layers}
    assert math.isnan(rows["<root>"].grad_norm) and rows["<root>"].grad_nonfinite == 1  # the weight grad is x
    assert rows["[output]"].activation_nonfinite == 1
