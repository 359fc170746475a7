"""RecordWriter: the run record written from a daemon thread; failures retried, bounded, counted, noted.

The training thread only puts immutable observations on a queue (`put_*` never block). The writer
thread moves them to a backlog and writes the backlog as one transaction. A write that fails (another
process holds the database locked, the disk is full, an I/O error) is retried with a backoff doubling
from RETRY_MIN_S to RETRY_MAX_S while the backlog keeps what waits; the backlog is bounded to
`backlog_rows` layer rows, and steps arriving beyond it are dropped (their events are kept). What is
finally not written - dropped, or still failing CLOSE_RETRY_S into close() - is counted in
`counters.record_errors` (`slatmon_record_errors_total`), logged once per failure streak, and its steps
are remembered (gaps.py): the record's meta "missing" lists them as soon as the database accepts writes
again and at close, where meta "closed" marks the clean end.

Before each write the path is checked against the file being written (device, inode). Removed or
replaced mid-run: counted once, logged once. If the path is free a fresh record starts there (meta
"begins"; run info, pre-flight findings and events written again; the steps the lost file held are
listed as missing). If another file took the path, recording stops: it is never overwritten, and every
later observation is counted as lost.
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
from .gaps import Gaps
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
        self._created = self._file.created
        self._backlog_rows = BACKLOG_ROWS if backlog_rows is None else backlog_rows  # module values at start
        self._close_retry_s = CLOSE_RETRY_S if close_retry_s is None else close_retry_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._backlog: list[tuple[Any, ...]] = []
        self._rows = 0  # layer rows in the backlog
        self._meta: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._ids: dict[str, int] = {}
        self._written_events: list[Event] = []
        self._gaps = Gaps()
        self._gaps_dirty = False
        self.version = 0  # changes whenever gap_events() does
        self._gap_view: tuple[Event, ...] = ()
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

    def gap_events(self) -> tuple[Event, ...]:
        """`record_gap` events for what could not be written so far (a reference swapped by the writer)."""
        return self._gap_view

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                pending = bool(self._backlog or self._dirty or self._gaps_dirty)
                wait = None if not pending else max(0.0, self._next_try - time.monotonic())
                self._drain(wait)
                if (self._backlog or self._dirty or self._gaps_dirty) and time.monotonic() >= self._next_try:
                    self._attempt()
                self._release()
            self._finish()
        except BaseException:  # never silently: whatever is left is reported as lost
            log.exception("slat-monitor: the run record writer for %s stopped", self.path)
            self._lose_backlog(f"the writer stopped on an internal error ({self._error or 'see the log'})")
        finally:
            self._release(force=True)

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
            self._lose(item, self._error)
        elif item[0] == "step" and self._rows + len(item[2]) > self._backlog_rows and item[2]:
            why = f"writes failing: {self._error}" if self._failures else "the writer could not keep up"
            self._lose(item, f"the writer's backlog was full ({self._backlog_rows} layer rows waiting; {why})")
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
                self._write_each(exc)
                return
            self._failed(exc)
            return
        self._succeeded()

    def _write(self, items: list[tuple[Any, ...]] | None = None) -> None:
        rf = self._file
        assert rf is not None
        meta = {k: self._meta[k] for k in self._dirty}
        if self._gaps_dirty:
            meta["missing"] = self._gaps.to_meta()
        new_ids = write_batch(rf.conn, self._backlog if items is None else items, meta, self._ids)
        self._ids.update(new_ids)

    def _succeeded(self) -> None:
        for item in self._backlog:
            self._written(item)
        if self._failures:
            log.warning("slat-monitor: the run record %s is written again after %d failed attempt(s)", self.path,
                        self._failures)
        self._backlog, self._rows, self._dirty, self._gaps_dirty = [], 0, set(), False
        self._failures, self._next_try = 0, 0.0

    def _written(self, item: tuple[Any, ...]) -> None:
        if item[0] == "step":
            self._gaps.written(item[1].step)
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

    def _write_each(self, first: BaseException) -> None:
        """A batch that failed for a reason retrying cannot fix: write its items one by one, drop the bad."""
        keep = list(self._backlog)
        self._backlog, self._rows = [], 0
        for n, item in enumerate(keep):
            try:
                self._write([item])
            except Exception as exc:
                if _transient(exc):
                    self._backlog = keep[n:]
                    self._rows = sum(len(i[2]) for i in self._backlog if i[0] == "step")
                    self._failed(exc)
                    return
                self._lose(item, f"could not be encoded ({type(exc).__name__}: {exc})")
            else:
                self._written(item)
                self._dirty, self._gaps_dirty = set(), False

    # -- losses -------------------------------------------------------------------------------
    def _lose(self, item: tuple[Any, ...], reason: str) -> None:
        """Count one observation that will not be in the record, and remember its step."""
        if item[0] == "meta":
            return
        step = item[1].step if item[0] == "step" else min((e.step for e in item[1]), default=0)
        if self.counters.record_errors == 0 or not self._gaps.spans or self._gaps.spans[-1].reason != reason:
            log.error("slat-monitor: run record %s: step %d could not be written (%s); counted in "
                      "slatmon_record_errors_total and noted in the record as missing", self.path, step, reason)
        self.counters.record_errors += 1
        self._gaps.lost(step, reason)
        self._gaps_changed()

    def _lose_backlog(self, reason: str) -> None:
        for item in self._backlog:
            self._lose(item, reason)
        self._backlog, self._rows = [], 0

    def _gaps_changed(self) -> None:
        self._gaps_dirty = True
        self._gap_view = self._gaps.events()
        self.version += 1

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
        self.counters.record_errors += 1
        files.drop(rf)  # our -wal/-shm go with it: a fresh file must not meet them
        self._gaps.file_lost(f"written to the record file that was {how} {where}")
        self._gaps_changed()
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
        self._gaps_dirty = True
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
        if self._gaps.spans:
            meta["missing"] = self._gaps.to_meta()
        meta["closed"] = {"time": time.time(), "lost": self.counters.record_errors}
        files.finalise(rf, meta)
