"""Record paths and record files a user (or a fault) hands the monitor (issue #9).

Every bad `record=` is a ConfigError naming it, and a failed watch() deletes no file it did not create.
`#`, `?` and `%` in a path touch no other file. Reading a record - closed, crashed, live, without its
side files, on read-only storage - creates no -wal/-shm file and changes no byte of the record. A damaged
record is a RecordError naming table, row and column; `slat-monitor diagnose` exits 2 with one line and
the triage page's loader shows the message.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import monitor
from monitor.cli import main as cli
from monitor.dashboard.sources import Source, SourceProblem, load
from monitor.record import read_record
from tests.models import watched_run
from tests.monitor.record_v1 import v1_record

from .record_env import checksums, read_only

CRASH = textwrap.dedent("""
    import os, signal, sys
    from monitor.history import LayerObs, StepObs
    from monitor.record import RecordWriter
    w = RecordWriter(sys.argv[1])
    w.put_meta("run", {"run": "crashed", "optimizer": "AdamW"})
    for s in (1, 2, 3):
        rows = [LayerObs(step=s, layer=f"l{i}", grad_norm=float(i)) for i in range(4)]
        w.put_step(StepObs(step=s, loss=1.0 / s), rows, [])
    assert w.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, Path]:
    """One record in each state a reader meets, each alone in its folder: "closed" (a real fp16 run with
    NaN, events, pre-flight findings), "crashed" (SIGKILLed writer: -wal and -shm beside it), "wal-only"
    (the crash without its -shm), "wal-mode" (a WAL-mode file whose WAL was folded in and removed)."""
    root = tmp_path_factory.mktemp("records")
    out = {name: root / name / "run.sqlite" for name in ("closed", "crashed", "wal-only", "wal-mode")}
    for p in out.values():
        p.parent.mkdir()
    watched_run(out["closed"], steps=3)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(out["crashed"])], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    for name in ("wal-only", "wal-mode"):
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{out['crashed']}{suffix}", f"{out[name]}{suffix}")
    with sqlite3.connect(out["wal-mode"]) as conn:  # recovers the WAL; closing folds it in and removes it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return out


def copy_of(record: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{record}{suffix}"):
            shutil.copyfile(f"{record}{suffix}", to / f"{record.name}{suffix}")
    return to / record.name


# -- record= ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, says", [
    (5, "record must be a file path (str or os.PathLike"),
    (b"runs/a.sqlite", "got bytes"),
    ("", "got an empty string"),
    ("a\0b.sqlite", "NUL character"),
    ("{folder}", "is a folder"),
    ("{folder}/notes.txt/run.sqlite", "which is a file, not a folder"),
    ("{folder}/notes.txt", "already exists"),
    ("/proc/run.sqlite", "cannot be created"),
    ("/proc/1/no/such/run.sqlite", "cannot be created"),
    ("{folder}/dangling.sqlite", "is a link to a file that does not exist"),
], ids=["int", "bytes", "empty", "nul", "folder", "under-a-file", "existing", "proc", "proc-folder", "dangling-link"])
def test_bad_record_argument_is_a_config_error(tmp_path, bad, says):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "dangling.sqlite").symlink_to(tmp_path / "nowhere" / "run.sqlite")
    before, names = checksums(tmp_path), sorted(os.listdir(tmp_path))
    if isinstance(bad, str):
        bad = bad.replace("{folder}", str(tmp_path))
    with pytest.raises(monitor.ConfigError, match="record") as err:
        monitor.watch(*_model(), port=None, record=bad)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert checksums(tmp_path) == before and sorted(os.listdir(tmp_path)) == names


def test_failed_watch_deletes_only_what_it_created(tmp_path):
    """A busy port fails watch() after the record was opened: a record it created goes, the user's empty
    placeholder stays (empty again), nothing else is touched."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        placeholder = tmp_path / "mine.sqlite"
        placeholder.touch()
        for record in (placeholder, tmp_path / "new.sqlite"):
            with pytest.raises(monitor.ConfigError, match="port"):
                monitor.watch(*_model(), port=busy.getsockname()[1], record=record)
    finally:
        busy.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.sqlite"] and placeholder.stat().st_size == 0


# -- paths with URI characters -------------------------------------------------------------------------
def test_uri_characters_in_the_path_touch_no_other_file(tmp_path, records):
    """Decoys are what a path pasted unescaped into a SQLite URI would open instead: `run` (cut at `#` or
    `?`, another program's live WAL database) and `runA.sqlite` (`%41` decoded)."""
    other = sqlite3.connect(tmp_path / "run")
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE theirs (x)")
    other.execute("INSERT INTO theirs VALUES (1)")
    other.commit()  # stays open: its -wal/-shm are live
    shutil.copyfile(records["closed"], tmp_path / "runA.sqlite")
    try:
        before = checksums(tmp_path)
        record = tmp_path / "run#1?x=%41.sqlite"
        watched_run(record, steps=2)
        assert [s.step for s in read_record(record).steps] == [1, 2]
        assert "fp16_no_loss_scale" in [f.code for f in monitor.diagnose(str(record))]
        assert cli(["diagnose", str(record)]) == 1  # read: critical findings (fp16 AdamW eps=1e-8)
        after = checksums(tmp_path)
        assert after.pop(record.name) and after == before
    finally:
        other.close()


# -- reading ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state, steps", [("closed", 3), ("crashed", 3), ("wal-only", 3), ("wal-mode", 3)])
def test_reading_creates_no_file_and_changes_no_byte(tmp_path, records, state, steps):
    path = copy_of(records[state], tmp_path / state)
    before = checksums(path.parent)
    h = read_record(path)
    found = {f.code: f for f in monitor.diagnose(str(path))}
    after = checksums(path.parent)
    if state == "crashed":  # the reader's shared-memory index may be rebuilt; the data files are untouched
        assert before.pop("run.sqlite-shm") and after.pop("run.sqlite-shm")
    assert after == before
    assert len(h.steps) == steps
    if state != "closed":  # the writer died: the record says it was not closed
        assert found["record_incomplete"].severity == "info"
        assert [e.detail for e in h.events if e.kind == "record_unclosed"] == [{"last_step": 3}]
    else:
        assert "record_incomplete" not in found


def test_read_only_storage(tmp_path, records):
    folder = tmp_path / "ro"
    for state in records:
        copy_of(records[state], folder / state)
    before = checksums(folder)
    with read_only(folder) as view:
        for state in records:
            path = view / state / "run.sqlite"
            with pytest.raises(OSError):
                (view / state / "probe").touch()  # really read-only
            assert len(read_record(path).steps) == 3, state
    assert checksums(folder) == before  # no file created, no byte changed


def test_reading_a_live_record_keeps_its_wal(tmp_path):
    """Read while the run writes, in the same process, while another process opens and closes the record:
    the reader never opens the file outside SQLite (closing any descriptor of it would drop the writer's
    locks, and the other process would take itself for the last one and delete the live WAL)."""
    path = tmp_path / "live.sqlite"
    seen = []

    def between(step: int, w: monitor.Watcher) -> None:
        seen.append(len(read_record(path).steps))
        assert w.tracker._writer.flush()  # the writer idle until the next step: only the reader could touch files
        stamp = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
        read_record(path)
        assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == stamp
        probe = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                 "c.execute('SELECT count(*) FROM slatmon_steps').fetchall(); c.close()")  # reads: opens the WAL
        subprocess.run([sys.executable, "-c", probe, str(path)], check=True)
        assert os.path.exists(f"{path}-wal"), "another process removed the live WAL"

    watched_run(path, steps=4, between=between)
    assert seen[-1] >= 1 and [s.step for s in read_record(path).steps] == [1, 2, 3, 4]
    assert "record_incomplete" not in [f.code for f in monitor.diagnose(str(path))]


# -- damaged records ----------------------------------------------------------------------------------
DAMAGE = {
    "meta-not-json": ("UPDATE slatmon_meta SET value = '{not json' WHERE key = 'run'",
                      "slatmon_meta row 'run' holds '{not json', expected JSON text"),
    "run-unknown-field": ("""UPDATE slatmon_meta SET value = '{"bogus": 1}' WHERE key = 'run'""",
                          "slatmon_meta rows 'run' / 'preflight' do not describe a run"),
    "loss-text": ("UPDATE slatmon_steps SET loss = 'abc' WHERE step = 2",
                  "slatmon_steps row step=2 column 'loss' holds 'abc', expected a number"),
    "lr-junk": ("""UPDATE slatmon_steps SET lr = '[1, "x"]' WHERE step = 1""",
                "slatmon_steps row step=1 column 'lr' holds '[1, \"x\"]', expected a JSON list of numbers"),
    "step-text": ("UPDATE slatmon_steps SET step = 'x' WHERE step = 3",
                  "slatmon_steps row #3 column 'step' holds 'x', expected an integer"),
    "sampled-2": ("UPDATE slatmon_steps SET sampled = 2 WHERE step = 1",
                  "slatmon_steps row step=1 column 'sampled' holds 2, expected 0 or 1"),
    "block-garbage": ("UPDATE slatmon_layer_blocks SET data = X'00112233' WHERE step = 2",
                      "slatmon_layer_blocks row step=2 column 'data' is damaged"),
    "block-text": ("UPDATE slatmon_layer_blocks SET data = 'abc' WHERE step = 1",
                   "slatmon_layer_blocks row step=1 holds a str, expected a block"),
    "block-rows": ("UPDATE slatmon_layer_blocks SET rows = 1 WHERE step = 1",
                   "slatmon_layer_blocks row step=1 holds 5 rows, its column 'rows' says 1"),
    "names-gap": ("UPDATE slatmon_layer_names SET id = 99 WHERE id = 0", "slatmon_layer_names row id=1"),
    "event-detail": ("UPDATE slatmon_events SET detail = 'nope' WHERE id = 1",
                     "slatmon_events row id=1 column 'detail' holds 'nope', expected a JSON object"),
    "event-kind": ("UPDATE slatmon_events SET kind = X'00' WHERE id = 1",
                   "slatmon_events row id=1 column 'kind' holds b'\\x00', expected text"),
    "no-blocks-table": ("DROP TABLE slatmon_layer_blocks", "table(s) slatmon_layer_blocks missing (schema 2)"),
    "newer-schema": ("UPDATE slatmon_meta SET value = '99' WHERE key = 'schema'",
                     "written by a newer slat-monitor (schema 99"),
    "missing-junk": ("""INSERT INTO slatmon_meta VALUES ('missing', '{"spans": [[1, "x"]]}')""",
                     "slatmon_meta row 'missing' span 0 is [1, 'x']"),
    "layer-fields": ("UPDATE slatmon_meta SET value = '3' WHERE key = 'layer_fields'",
                     "slatmon_meta row 'layer_fields' holds 3, expected a list of field names"),
    "v1-layer-text": ("UPDATE slatmon_layers SET grad_norm = 'abc' WHERE step = 1 AND layer = 'blocks.0'",
                      "slatmon_layers row step=1 column 'grad_norm' holds 'abc', expected a number"),
    "truncated": (None, "is not a slat-monitor run record (database disk image is malformed)"),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, records) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for name, (sql, _) in DAMAGE.items():
        path = root / name / "run.sqlite"
        path.parent.mkdir()
        if name.startswith("v1-"):
            v1_record(path)
        else:
            shutil.copyfile(records["closed"], path)
        if sql is None:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            conn = sqlite3.connect(path)
            conn.execute(sql)
            conn.commit()
            conn.close()
        out[name] = path
    return out


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_record_is_one_clear_error(damaged, name, capsys):
    path, says = damaged[name], DAMAGE[name][1]
    with pytest.raises(monitor.RecordError) as err:
        monitor.diagnose(str(path))
    assert says in str(err.value) and str(path) in str(err.value), str(err.value)
    assert cli(["diagnose", str(path)]) == 2
    out, errors = capsys.readouterr()
    assert out == "" and errors.count("\n") == 1 and says in errors
    assert errors.startswith("slat-monitor diagnose: error: ")
    with pytest.raises(SourceProblem, match=re.escape(says)):
        load(Source(kind="record", record=str(path)))
