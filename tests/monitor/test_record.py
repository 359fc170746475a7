"""The run record survives a SIGKILL (and says it was not closed), and bad paths give clear errors."""

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
    # no clean-close marker: the record says it may lack its end, as a note (nothing is known to be missing)
    import monitor

    found = {f.code: f for f in monitor.diagnose(str(path))}
    assert found["record_incomplete"].severity == "info" and found["record_incomplete"].first_step == steps[-1]
    assert "not closed" in found["record_incomplete"].evidence[0]


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


def test_clean_close_leaves_one_file_and_readers_add_none(tmp_path):
    """Issue 15: a clean close checkpoints and leaves WAL mode; reading the record (read-only) afterwards
    creates no -wal/-shm files either (a reader of a WAL-mode file would)."""
    import sqlite3

    from tests.models import watched_run

    path = tmp_path / "run.sqlite"
    watched_run(path, steps=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sqlite"]
    assert [s.step for s in read_record(path).steps] == [1, 2, 3, 4]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sqlite"]


def test_close_while_a_reader_is_open_keeps_every_row(tmp_path):
    """A live reader (the triage page) blocks leaving WAL mode: close still succeeds, nothing is lost."""
    import sqlite3

    from tests.models import watched_run

    path = tmp_path / "run.sqlite"
    reader: list[sqlite3.Connection] = []

    def open_reader(step, w):
        if step == 2:
            time.sleep(0.3)  # let the writer thread create the tables and commit
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM slatmon_steps").fetchone()  # holds a read snapshot
            reader.append(conn)

    w = watched_run(path, steps=4, between=open_reader)
    try:
        assert w is not None and [s.step for s in read_record(path).steps] == [1, 2, 3, 4]
    finally:
        reader[0].close()
