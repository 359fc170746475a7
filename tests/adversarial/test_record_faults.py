"""The run record under real faults (issue #9): another process holding the database locked, a full disk,
the file removed or replaced mid-run. Each run's weights come out bitwise equal to an unwatched run's;
what was lost is counted (slatmon_record_errors_total), the record says which steps it lacks and why,
and its diagnosis is not healthy."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

import monitor
from monitor.history import History
from monitor.record import read_record, writer
from tests.realservers import wait_until

from .record_env import Locker, SmallDisk, same_weights, train

STEPS = 20
ROWS_PER_STEP = 5  # Fp16Blocks: input_layer, blocks.0, blocks.2, out_layer, [output]


@pytest.fixture(scope="module")
def unwatched():
    return train(STEPS)[0]


@pytest.fixture
def small_backlog(monkeypatch):
    """Ten steps of this model may wait for the database; later ones are dropped (and counted)."""
    monkeypatch.setattr(writer, "BACKLOG_ROWS", 10 * ROWS_PER_STEP)
    monkeypatch.setattr(writer, "CLOSE_RETRY_S", 0.5)


def missing_steps(h: History) -> set[int]:
    return {s for e in h.events if e.kind == "record_gap" for s in range(e.detail["first"], e.detail["last"] + 1)}


def has_gap(path) -> bool:
    return any(e.kind == "record_gap" for e in read_record(path).events)


def record_errors_metric(url: str) -> float:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return next(s.value for f in text_string_to_metric_families(body) for s in f.samples
                if s.name == "slatmon_record_errors_total")


def check_incomplete(path, w: monitor.Watcher, *, reason: str) -> set[int]:
    """The record lacks exactly the steps it says it lacks, as many as were counted; `diagnose` warns."""
    h = read_record(path)
    missing, recorded = missing_steps(h), {s.step for s in h.steps}
    assert missing and not missing & recorded and missing | recorded == set(range(1, STEPS + 1)), (missing, recorded)
    gaps = [e for e in h.events if e.kind == "record_gap"]
    assert all(reason in e.detail["reason"] for e in gaps), gaps
    assert not [e for e in h.events if e.kind == "record_unclosed"]  # closed cleanly: it knows what it lacks
    found = [f for f in monitor.diagnose(str(path)) if f.code == "record_incomplete"]
    assert len(found) == 1 and found[0].severity == "warning" and found[0].first_step == min(missing), found
    assert reason in " ".join(found[0].evidence)
    assert w.counters.errors == 0  # the training thread never saw an exception
    return missing


def failed_once(caplog) -> Callable[[], bool]:
    return lambda: "retrying in the background" in caplog.text


def test_database_locked_by_another_process(tmp_path, small_backlog, unwatched, caplog):
    path = tmp_path / "locked.sqlite"
    seen: dict[str, object] = {}
    locker: list[Locker] = []

    def between(step: int, w: monitor.Watcher) -> None:
        if step == 3:
            wait_until(lambda: len(read_record(path).steps) == 3, timeout=30, what="steps 1-3 written")
            locker.append(Locker(path))
        if step == 4:  # steps 4-13 wait in the backlog, 14-16 find it full
            wait_until(failed_once(caplog), timeout=30, what="a write failing on the lock")
        if step == 16:
            wait_until(lambda: w.counters.record_errors > 0, timeout=30, what="a step dropped while locked")
            seen["live"] = [f.code for f in w.findings()]
            seen["metric"], seen["counted"] = record_errors_metric(w.url), w.counters.record_errors
            locker[0].release()
            wait_until(lambda: has_gap(path), timeout=30, what="the record written again, with its gap")

    weights, w = train(STEPS, record=path, between=between, port=0)
    assert same_weights(weights, unwatched)
    missing = check_incomplete(path, w, reason="database is locked")
    assert missing == {14, 15, 16}  # queued while the lock was held, beyond the backlog
    assert w.counters.record_errors == len(missing)
    assert "record_incomplete" in seen["live"] and seen["metric"] == seen["counted"] > 0


def test_disk_full_then_space_freed(tmp_path, small_backlog, unwatched, caplog):
    disk = SmallDisk(tmp_path)
    path = disk.folder / "full.sqlite"

    def between(step: int, w: monitor.Watcher) -> None:
        if step == 2:
            wait_until(lambda: len(read_record(path).steps) == 2, timeout=30, what="steps 1-2 written")
            disk.fill()
        if step == 3:
            wait_until(failed_once(caplog), timeout=30, what="a write failing on the full disk")
        if step == 15:  # steps 3-12 waited in the backlog, 13-15 found it full
            wait_until(lambda: w.counters.record_errors > 0, timeout=30, what="a step dropped on the full disk")
            disk.free()
            wait_until(lambda: has_gap(path), timeout=30, what="the record written again, with its gap")

    try:
        weights, w = train(STEPS, record=path, between=between)
        reason = "database or disk is full" if disk.tmpfs else "OperationalError"
        missing = check_incomplete(path, w, reason=reason)
    finally:
        disk.close()
    assert same_weights(weights, unwatched)
    assert missing == {13, 14, 15} and w.counters.record_errors == len(missing)


def test_disk_full_to_the_end(tmp_path, small_backlog, unwatched):
    """Nothing more can be written, the clean-close marker perhaps neither: the record is still readable
    up to where the disk filled, the losses are counted, and the diagnosis says the record is incomplete."""
    disk = SmallDisk(tmp_path)
    path = disk.folder / "full.sqlite"

    def between(step: int, w: monitor.Watcher) -> None:
        if step == 2:
            wait_until(lambda: len(read_record(path).steps) == 2, timeout=30, what="steps 1-2 written")
            disk.fill()

    try:
        weights, w = train(STEPS, record=path, between=between)
        h = read_record(path)
        found = [f for f in monitor.diagnose(str(path)) if f.code == "record_incomplete"]
    finally:
        disk.close()
    assert same_weights(weights, unwatched)
    recorded = [s.step for s in h.steps]
    assert recorded == list(range(1, len(recorded) + 1)) and len(recorded) < STEPS
    assert w.counters.record_errors >= 1 and w.counters.errors == 0
    assert len(found) == 1, found
    gaps = missing_steps(h)
    if gaps:  # the closing meta still fitted: it lists exactly what is not there
        assert gaps == set(range(len(recorded) + 1, STEPS + 1)) and found[0].severity == "warning"
    else:
        assert found[0].severity == "info" and "not closed" in " ".join(found[0].evidence)


@pytest.mark.parametrize("removed", [("",), ("", "-wal", "-shm")], ids=["file", "file-and-side-files"])
def test_record_removed_mid_run_starts_again(tmp_path, unwatched, removed):
    path = tmp_path / "removed.sqlite"

    def between(step: int, w: monitor.Watcher) -> None:
        if step == 4:
            wait_until(lambda: len(read_record(path).steps) == 4, timeout=30, what="steps 1-4 written")
            for suffix in removed:
                os.unlink(f"{path}{suffix}")

    weights, w = train(STEPS, record=path, between=between)
    assert same_weights(weights, unwatched)
    missing = check_incomplete(path, w, reason="removed")
    assert missing == {1, 2, 3, 4} and w.counters.record_errors == 1  # one file lost, every later step kept
    h = read_record(path)
    assert h.run.run == "faults" and h.run.optimizer == "AdamW"  # run info written again into the new file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["removed.sqlite"]


def test_record_replaced_by_another_file_is_left_alone(tmp_path, unwatched):
    path = tmp_path / "replaced.sqlite"
    other = tmp_path / "notes.txt"
    other.write_text("someone else's file\n" * 100)

    def between(step: int, w: monitor.Watcher) -> None:
        if step == 4:
            wait_until(lambda: len(read_record(path).steps) == 4, timeout=30, what="steps 1-4 written")
            os.replace(other, path)
        if step == 6:
            wait_until(lambda: w.counters.record_errors > 0, timeout=30, what="the replacement noticed")
            assert "record_incomplete" in [f.code for f in w.findings()]

    weights, w = train(STEPS, record=path, between=between)
    assert same_weights(weights, unwatched)
    assert path.read_text() == "someone else's file\n" * 100  # never overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replaced.sqlite"]  # no -wal/-shm left beside it
    # the file (1) and every later step are counted; the four written before went with the old file
    assert w.counters.record_errors == 1 + (STEPS - 4)
    with pytest.raises(monitor.RecordError, match="not a slat-monitor run record"):
        read_record(path)
