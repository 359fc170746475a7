"""read_record: a run record (schema 1 or 2) as a History, read safely (opening.py) and checked (rows.py).

Every problem is a RecordError with one line saying what is wrong and where (table, row, column);
SQLite's and JSON's own exceptions never reach the caller. What the record says about itself - steps
that could not be written, a record never closed cleanly - comes back as `record_gap` /
`record_unclosed` events (gaps.py), which the `record_incomplete` rule reports.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RecordError
from ..history import Event, History, LayerObs, StepObs
from . import blocks
from .gaps import record_events
from .opening import open_record
from .rows import Damaged, checks_for, json_value
from .schema import SCHEMA_VERSION

__all__ = ["read_record"]


class _Bad(Exception):
    """Where a damaged value sits; turned into a RecordError with the path by read_record."""


class _Newer(Exception):
    """A record of a schema this version does not know."""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of LayerObs are made in a row and none is garbage: collections during that only cost time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_record(path: str | os.PathLike[str]) -> History:
    """Load a run record as a History. Raises RecordError when `path` is missing, not a record, or damaged."""
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise RecordError(f"a run record path must be a str or os.PathLike, got {type(path).__name__}") from None
    if not p.is_file():
        raise RecordError(f"no run record at {str(p)!r}: expected the SQLite file written by "
                          "monitor.watch(..., record=PATH)")
    if p.stat().st_size == 0:
        raise RecordError(f"{str(p)!r} is not a slat-monitor run record (an empty file)")
    try:
        with open_record(p) as conn, _gc_paused():
            conn.execute("BEGIN")  # one snapshot of a record that is still being written
            return _load(conn)
    except _Bad as exc:
        raise RecordError(f"{str(p)!r} is a damaged run record: {exc}") from None
    except _Newer as exc:
        raise RecordError(f"the run record {str(p)!r} was {exc}") from None
    except sqlite3.Error as exc:
        raise RecordError(f"{str(p)!r} is not a slat-monitor run record ({exc})") from None
    except OSError as exc:
        raise RecordError(f"cannot read the run record {str(p)!r}: {exc.strerror or exc}") from None


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _meta(conn: sqlite3.Connection) -> dict[str, Any]:
    meta = {}
    for key, value in conn.execute("SELECT key, value FROM slatmon_meta"):
        try:
            meta[key] = json_value(value, "JSON text")
        except Damaged as exc:
            raise _Bad(f"slatmon_meta row {key!r} {exc}") from None
    return meta


def _schema(meta: dict[str, Any], tables: set[str]) -> int:
    schema = meta.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise _Bad(f"slatmon_meta row 'schema' holds {schema!r}, expected a schema version (1-{SCHEMA_VERSION})")
    if schema > SCHEMA_VERSION:
        raise _Newer(f"written by a newer slat-monitor (schema {schema}; this version reads 1-{SCHEMA_VERSION}): "
                     "upgrade slat-monitor to read it")
    needed = {"slatmon_steps", "slatmon_events"} | (
        {"slatmon_layers"} if schema == 1 else {"slatmon_layer_names", "slatmon_layer_blocks"})
    if needed - tables:
        raise _Bad(f"table(s) {', '.join(sorted(needed - tables))} missing (schema {schema})")
    return schema


def _load(conn: sqlite3.Connection) -> History:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "slatmon_meta" not in tables:
        raise sqlite3.DatabaseError("no slatmon_meta table")
    meta = _meta(conn)
    schema = _schema(meta, tables)
    try:
        base = History.from_dict({"run": meta.get("run", {}), "preflight": meta.get("preflight", [])})
    except Exception as exc:  # any shape from_dict cannot take
        raise _Bad(f"slatmon_meta rows 'run' / 'preflight' do not describe a run ({type(exc).__name__}: "
                   f"{exc})") from None
    steps = _table(conn, "slatmon_steps", StepObs, "step", "ORDER BY step")
    layers = _v1_layers(conn) if schema == 1 else _v2_layers(conn, meta)
    events = _events(conn)
    last = steps[-1].step if steps else 0
    try:
        events += record_events(meta, schema, last)
    except ValueError as exc:
        raise _Bad(f"slatmon_meta row 'missing' {exc}") from None
    return History(run=base.run, steps=steps, layers=layers, events=events, preflight=base.preflight)


def _table(conn: sqlite3.Connection, table: str, cls: type, key: str, order: str) -> list[Any]:
    """Rows of `table` as `cls` objects: the columns `cls` knows (others ignored, missing ones default)."""
    known = {f for f in cls.__dataclass_fields__}
    cols = [c for c in _columns(conn, table) if c in known]
    if key not in cols:
        raise _Bad(f"table {table} has no column {key!r}")
    checks = checks_for(cls, cols)
    out = []
    for n, row in enumerate(conn.execute(f"SELECT {', '.join(cols)} FROM {table} {order}"), 1):
        values = {}
        for c, check, v in zip(cols, checks, row):
            try:
                values[c] = check(v)
            except Damaged as exc:
                where = f"{key}={row[cols.index(key)]!r}" if c != key else f"#{n}"
                raise _Bad(f"{table} row {where} column {c!r} {exc}") from None
        out.append(cls(**values))
    return out


def _v1_layers(conn: sqlite3.Connection) -> list[LayerObs]:
    for c in ("step", "layer"):
        if c not in _columns(conn, "slatmon_layers"):
            raise _Bad(f"table slatmon_layers has no column {c!r}")
    return _table(conn, "slatmon_layers", LayerObs, "step", "ORDER BY step, rowid")


def _v2_layers(conn: sqlite3.Connection, meta: dict[str, Any]) -> list[LayerObs]:
    held = meta.get("layer_fields")
    if not isinstance(held, list) or not all(isinstance(f, str) for f in held):
        raise _Bad(f"slatmon_meta row 'layer_fields' holds {held!r:.80}, expected a list of field names")
    names = []
    for n, (i, name) in enumerate(conn.execute("SELECT id, name FROM slatmon_layer_names ORDER BY id")):
        if i != n or not isinstance(name, str):
            raise _Bad(f"slatmon_layer_names row id={i!r} holds {name!r:.80}, expected ids 0, 1, ... with text names")
        names.append(name)
    out: list[LayerObs] = []
    for step, rows, data in conn.execute("SELECT step, rows, data FROM slatmon_layer_blocks ORDER BY step"):
        if not isinstance(step, int) or not isinstance(data, bytes):
            raise _Bad(f"slatmon_layer_blocks row step={step!r:.40} holds a {type(data).__name__}, expected a block")
        try:
            block = blocks.decode(data, step, names, held)
        except blocks.BlockError as exc:
            raise _Bad(f"slatmon_layer_blocks row step={step} column 'data' is damaged ({exc})") from None
        if len(block) != rows:
            raise _Bad(f"slatmon_layer_blocks row step={step} holds {len(block)} rows, its column 'rows' says {rows!r}")
        out += block
    return out


def _event(row: tuple[Any, ...], checks: list[Any]) -> Event:
    values = {}
    for col, check, v in zip(("step", "kind", "layer", "tensor"), checks, row[1:5]):
        try:
            values[col] = check(v)
        except Damaged as exc:
            raise _Bad(f"slatmon_events row id={row[0]!r} column {col!r} {exc}") from None
    try:
        detail = {} if row[5] is None else json_value(row[5], "a JSON object")
        if not isinstance(detail, dict):
            raise Damaged(row[5], "a JSON object")
    except Damaged as exc:
        raise _Bad(f"slatmon_events row id={row[0]!r} column 'detail' {exc}") from None
    return Event(**values, detail=detail)


def _events(conn: sqlite3.Connection) -> list[Event]:
    checks = checks_for(Event, ["step", "kind", "layer", "tensor"])
    rows = conn.execute("SELECT id, step, kind, layer, tensor, detail FROM slatmon_events ORDER BY id")
    return [_event(row, checks) for row in rows]
