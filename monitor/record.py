"""The run record: a SQLite database (WAL) written by a background thread, read back as a History.

Tables: `slatmon_meta` (key -> JSON: run info, pre-flight findings), `slatmon_steps`,
`slatmon_layers`, `slatmon_events`. Every batch is one committed transaction, so a training
process killed with SIGKILL leaves a record readable up to the last batch written.
The training thread only puts immutable observations on a queue; it never waits for the disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, RecordError
from .history import Event, History, LayerObs, StepObs

__all__ = ["RecordWriter", "read_record"]

log = logging.getLogger("monitor")

_STEP_COLS = [f.name for f in fields(StepObs)]
_LAYER_COLS = [f.name for f in fields(LayerObs)]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS slatmon_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slatmon_steps ({", ".join(_STEP_COLS)}, PRIMARY KEY (step));
CREATE TABLE IF NOT EXISTS slatmon_layers ({", ".join(_LAYER_COLS)}, PRIMARY KEY (step, layer));
CREATE TABLE IF NOT EXISTS slatmon_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
    step INTEGER, kind TEXT, layer TEXT, tensor TEXT, detail TEXT);
"""
_STOP = object()


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_NAN = "NaN"  # SQLite stores a float NaN as NULL ("not measured"); keep it as text instead


def _encode(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _decode(value: Any) -> Any:
    return math.nan if value == _NAN else value


class RecordWriter:
    """Writes observations to `path` from a daemon thread. `put_*` never block the caller."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if Path(self.path).exists() and Path(self.path).stat().st_size > 0:
            raise ConfigError(f"watch(): record={self.path!r} already exists; pass a new path (one record per "
                              "run and rank) or remove the file - an existing record is never overwritten")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)  # fail here, in the caller, on a bad path
        conn.executescript(_SCHEMA)
        conn.commit()
        self._conn = conn
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="slatmon-record", daemon=True)
        self._thread.start()

    def put_meta(self, key: str, value: Any) -> None:
        self._queue.put(("meta", key, value))

    def put_step(self, step: StepObs, rows: list[LayerObs], events: list[Event]) -> None:
        self._queue.put(("step", step, rows, events))

    def put_events(self, events: list[Event]) -> None:
        self._queue.put(("events", events))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (False on timeout or a dead writer)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the thread. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:  # drain what is already there into the same transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            flushed = [item for item in batch if isinstance(item, threading.Event)]
            try:
                self._write([item for item in batch if item is not _STOP and not isinstance(item, threading.Event)])
            except Exception:
                self.errors += 1
                log.exception("slat-monitor: writing the run record %s failed", self.path)
            for done in flushed:  # committed (or failed and logged): release flush()
                done.set()
            if stop:
                self._conn.close()
                return

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        with self._conn:  # one transaction
            for item in batch:
                if item[0] == "meta":
                    self._conn.execute("INSERT OR REPLACE INTO slatmon_meta VALUES (?, ?)",
                                       (item[1], json.dumps(item[2])))
                    continue
                if item[0] == "events":
                    self._insert_events(item[1])
                    continue
                _, step, rows, events = item
                s = asdict(step)
                self._conn.execute(
                    f"INSERT OR REPLACE INTO slatmon_steps VALUES ({', '.join('?' * len(_STEP_COLS))})",
                    [_encode(s[c]) for c in _STEP_COLS])
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO slatmon_layers VALUES ({', '.join('?' * len(_LAYER_COLS))})",
                    [[_encode(getattr(r, c)) for c in _LAYER_COLS] for r in rows])
                self._insert_events(events)

    def _insert_events(self, events: list[Event]) -> None:
        self._conn.executemany(
            "INSERT INTO slatmon_events (step, kind, layer, tensor, detail) VALUES (?, ?, ?, ?, ?)",
            [(e.step, e.kind, e.layer, e.tensor, json.dumps(e.detail)) for e in events])


def read_record(path: str | os.PathLike[str]) -> History:
    """Load a run record as a History. Raises RecordError when `path` is missing or not a record."""
    p = Path(path)
    if not p.is_file():
        raise RecordError(f"no run record at {str(p)!r}: expected the SQLite file written by "
                          "monitor.watch(..., record=PATH)")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            return _load(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise RecordError(f"{str(p)!r} is not a slat-monitor run record ({exc})") from None


def _load(conn: sqlite3.Connection) -> History:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "slatmon_meta" not in tables:
        raise sqlite3.DatabaseError("no slatmon_meta table")
    meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM slatmon_meta")}
    steps = []
    for row in conn.execute(f"SELECT {', '.join(_STEP_COLS)} FROM slatmon_steps ORDER BY step"):
        d = {c: _decode(v) for c, v in zip(_STEP_COLS, row)}
        d["lr"], d["eps"] = tuple(json.loads(d["lr"] or "[]")), tuple(json.loads(d["eps"] or "[]"))
        d["sampled"], d["skipped"] = bool(d["sampled"]), bool(d["skipped"])
        steps.append(StepObs(**d))
    layers = [LayerObs(**{c: _decode(v) for c, v in zip(_LAYER_COLS, row)}) for row in conn.execute(
        f"SELECT {', '.join(_LAYER_COLS)} FROM slatmon_layers ORDER BY step, rowid")]
    events = [Event(step=s, kind=k, layer=layer, tensor=t, detail=json.loads(d or "{}")) for s, k, layer, t, d
              in conn.execute("SELECT step, kind, layer, tensor, detail FROM slatmon_events ORDER BY id")]
    base = History.from_dict({"run": meta.get("run", {}), "preflight": meta.get("preflight", [])})
    return History(run=base.run, steps=steps, layers=layers, events=events, preflight=base.preflight)
