"""RecordWriter: the run record written from a daemon thread; failures retried, bounded, counted, noted.

The training thread only queues immutable observations (`put_*` never block). The writer thread writes
its backlog as one transaction; a failed write (a lock held elsewhere, a full disk, an I/O error) is
retried with backoff (RETRY_MIN_S doubling to RETRY_MAX_S), the backlog bounded to `backlog_rows` layer
rows (later steps dropped, their events kept). What is finally lost is counted and noted (losses.py,
gaps.py): meta "missing" as soon as writes succeed again and at close, where meta "closed" marks a clean
end. A record file removed mid-run starts again at its path; one replaced by another file is left alone
(recording stops). docs/architecture.md, "The run record under faults", has the whole picture.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import Any

from ..history import Event, LayerObs, StepObs
from ..snapshot import Counters
from . import files
from .files import RecordFile
from .losses import Losses
from .store import write_batch

__all__ = ["BACKLOG_ROWS", "CLOSE_RETRY_S", "RecordWriter"]

log = logging.getLogger("monitor")

RETRY_MIN_S, RETRY_MAX_S = 0.05, 2.0
CLOSE_RETRY_S = 5.0  # how long close() keeps retrying a failing write before counting the rest as lost
BACKLOG_ROWS = 200_000  # layer rows waiting at most (~50-100 MB); 20 steps of a 10,000-layer model
_STOP = object()
_KEEP_EVENTS = 10_000  # events kept to write again into a fresh record


def _transient(exc: BaseException) -> bool:
    """Worth retrying: locks, a full disk, I/O errors, a file SQLite cannot use right now."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError


class RecordWriter:
    """Writes observations to the record at `path` from a daemon thread. `put_*` never block the caller.
    Raises ConfigError (naming `record`) when the file cannot be created."""

    def __init__(self, path: str, counters: Counters | None = None, *, backlog_rows: int | None = None,
                 close_retry_s: float | None = None) -> None:
        self.path = str(path)
        self.counters = counters if counters is not None else Counters()
        self._file: RecordFile | None = files.create(self.path)  # fails here, in the caller
        self._backlog_rows = BACKLOG_ROWS if backlog_rows is None else backlog_rows  # module values at start
        self._close_retry_s = CLOSE_RETRY_S if close_retry_s is None else close_retry_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._backlog: list[tuple[Any, ...]] = []
        self._rows = 0  # layer rows in the backlog: kept as a count (a drop must not walk the backlog)
        self._meta: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._ids: dict[str, int] = {}
        self._written_events: list[Event] = []
        self._losses = Losses(self.path, self.counters)
        self._failures = 0  # consecutive failed attempts
        self._next_try = 0.0
        self._error = ""  # the last failure, as a reason
        self._stopping = False
        self._waiters: list[threading.Event] = []
        self._thread = threading.Thread(target=self._run, name="slatmon-record", daemon=True)
        self._thread.start()

    # -- training thread ----------------------------------------------------------------------
    def put_meta(self, key: str, value: Any) -> None:
        self._queue.put(("meta", key, value))

    def put_step(self, step: StepObs, rows: list[LayerObs], events: list[Event]) -> None:
        self._queue.put(("step", step, rows, events))

    def put_events(self, events: list[Event]) -> None:
        self._queue.put(("events", events))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far was written (True) or a write of it failed (False: the
        writer retries in the background); False also on timeout or a stopped writer."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout) and not self._backlog and self._failures == 0

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (retrying up to `close_retry_s`), mark the record closed, stop. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def discard(self) -> None:
        """After close(): remove the record if this writer created it, or empty the user's empty file again."""
        if self._file is not None:
            files.discard(self._file)

    # -- any thread ---------------------------------------------------------------------------
    @property
    def errors(self) -> int:
        return self.counters.record_errors

    @property
    def version(self) -> int:
        """Changes whenever gap_events() does."""
        return self._losses.version

    def gap_events(self) -> tuple[Event, ...]:
        """`record_gap` events for what could not be written so far (a reference swapped by the writer)."""
        return self._losses.view

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                wait = None if not self._pending() else max(0.0, self._next_try - time.monotonic())
                self._drain(wait)
                if self._pending() and time.monotonic() >= self._next_try:
                    self._attempt()
                self._release()
            self._finish()
        except BaseException:  # never silently: whatever is left is reported as lost
            log.exception("slat-monitor: the run record writer for %s stopped", self.path)
            self._lose_backlog(f"the writer stopped on an internal error ({self._error or 'see the log'})")
        finally:
            self._release(force=True)

    def _pending(self) -> bool:
        """Something to write, and a file to write it to."""
        return self._file is not None and bool(self._backlog or self._dirty or self._losses.dirty)

    def _drain(self, wait: float | None) -> None:
        try:
            items = [self._queue.get(timeout=wait) if wait != 0 else self._queue.get_nowait()]
        except queue.Empty:
            return
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in items:
            self._accept(item)

    def _accept(self, item: Any) -> None:
        if item is _STOP:
            self._stopping = True
        elif isinstance(item, threading.Event):
            self._waiters.append(item)
        elif item[0] == "meta":
            self._meta[item[1]] = item[2]
            self._dirty.add(item[1])
        elif self._file is None:  # recording stopped: another file holds the path
            self._losses.lose(item, self._error)
        elif item[0] == "step" and item[2] and self._rows + len(item[2]) > self._backlog_rows:
            why = f"writes failing: {self._error}" if self._failures else "the writer could not keep up"
            self._losses.lose(item, f"the writer's backlog was full ({self._backlog_rows} layer rows waiting; {why})")
            if item[3]:
                self._backlog.append(("events", item[3]))
        else:
            self._backlog.append(item)
            self._rows += len(item[2]) if item[0] == "step" else 0

    def _release(self, force: bool = False) -> None:
        if force or not self._backlog or self._failures:
            for w in self._waiters:
                w.set()
            self._waiters = []

    def _attempt(self) -> None:
        if not self._check_file():
            return
        try:
            self._write()
        except Exception as exc:
            if not _transient(exc):
                log.exception("slat-monitor: a run-record batch could not be encoded; writing it item by item")
                self._write_each()
                return
            self._failed(exc)
            return
        self._succeeded()

    def _write(self, items: list[tuple[Any, ...]] | None = None) -> None:
        rf = self._file
        assert rf is not None
        meta = {k: self._meta[k] for k in self._dirty}
        if self._losses.dirty:
            meta["missing"] = self._losses.meta()
        new_ids = write_batch(rf.conn, self._backlog if items is None else items, meta, self._ids)
        self._ids.update(new_ids)

    def _succeeded(self) -> None:
        for item in self._backlog:
            self._written(item)
        if self._failures:
            log.warning("slat-monitor: the run record %s is written again after %d failed attempt(s)", self.path,
                        self._failures)
        self._backlog, self._rows, self._dirty, self._losses.dirty = [], 0, set(), False
        self._failures, self._next_try = 0, 0.0

    def _written(self, item: tuple[Any, ...]) -> None:
        self._losses.written(item)
        events = item[1] if item[0] == "events" else item[3]
        if len(self._written_events) < _KEEP_EVENTS:
            self._written_events += events

    def _failed(self, exc: BaseException) -> None:
        self._error = f"{type(exc).__name__}: {exc}"
        if self._failures == 0:
            log.warning("slat-monitor: writing the run record %s failed (%s); retrying in the background, "
                        "training goes on", self.path, self._error)
        self._failures += 1
        self._next_try = time.monotonic() + min(RETRY_MIN_S * 2 ** (self._failures - 1), RETRY_MAX_S)

    def _write_each(self) -> None:
        """A batch that failed for a reason retrying cannot fix: write its items one by one, then the meta;
        drop what fails the same way."""
        keep, self._backlog, self._rows = self._backlog, [], 0
        for n, item in enumerate([*keep, None]):  # None: the meta alone
            try:
                self._write([] if item is None else [item])
            except Exception as exc:
                if _transient(exc):
                    self._backlog = keep[n:]
                    self._rows = sum(len(i[2]) for i in self._backlog if i[0] == "step")
                    self._failed(exc)
                    return
                why = f"{type(exc).__name__}: {exc}"
                if item is not None:
                    self._losses.lose(item, f"could not be encoded ({why})")
                    continue
                log.error("slat-monitor: run record %s: meta %s cannot be stored (%s)", self.path, sorted(self._dirty),
                          why)
            else:
                if item is not None:
                    self._written(item)
            self._dirty, self._losses.dirty = set(), False

    def _lose_backlog(self, reason: str) -> None:
        for item in self._backlog:
            self._losses.lose(item, reason)
        self._backlog, self._rows = [], 0

    # -- the file -----------------------------------------------------------------------------
    def _check_file(self) -> bool:
        """True when the path still names our file, or a fresh record was started there."""
        rf = self._file
        if rf is None:
            return False
        how = files.moved(rf)
        if how is None:
            return True
        step = next((item[1].step for item in self._backlog if item[0] == "step"), None)
        where = f"before step {step}" if step is not None else "mid-run"
        files.drop(rf)  # our -wal/-shm go with it: a fresh file must not meet them
        self._losses.file_lost(f"written to the record file that was {how} {where}")
        if how == "replaced":
            self._file, self._error = None, f"another file took the record's path {where}; it is never overwritten"
            log.error("slat-monitor: run record %s was replaced by another file %s; recording stops (the rest of "
                      "the run is counted in slatmon_record_errors_total)", self.path, where)
            self._lose_backlog(self._error)
            return False
        log.error("slat-monitor: run record %s was removed %s; a fresh record starts there (the steps it held are "
                  "noted as missing)", self.path, where)
        return self._restart(step)

    def _restart(self, step: int | None) -> bool:
        try:
            self._file = files.create(self.path)
        except Exception as exc:
            self._file = None
            self._error = f"the record was removed and could not be made again: {exc}"
            log.error("slat-monitor: %s", self._error)
            self._lose_backlog(self._error)
            return False
        self._ids = {}
        self._meta["begins"] = {"step": step, "reason": "the record file was removed mid-run; this file "
                                "starts again where it was noticed"}
        self._dirty = set(self._meta)
        self._losses.dirty = True
        if self._written_events:
            self._backlog.insert(0, ("events", list(self._written_events)))
            self._written_events = []
        return True

    def _finish(self) -> None:
        deadline = time.monotonic() + self._close_retry_s
        while self._file is not None and time.monotonic() < deadline:
            if not self._backlog and files.moved(self._file) is None:
                break
            time.sleep(max(0.0, min(self._next_try, deadline) - time.monotonic()))
            self._attempt()
        if self._backlog:
            self._lose_backlog(f"still failing when the run closed: {self._error}")
        rf = self._file
        if rf is None:
            return
        meta = {k: self._meta[k] for k in self._dirty}
        if self._losses.gaps.spans:
            meta["missing"] = self._losses.meta()
        meta["closed"] = {"time": time.time(), "lost": self.counters.record_errors}
        files.finalise(rf, meta)
