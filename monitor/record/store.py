"""One transaction of the record writer: steps, their packed layer blocks, events and meta (schema 2)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..history import Event, LayerObs
from . import blocks
from .schema import LAYER_FIELDS, STEP_COLS, event_row, step_row

__all__ = ["write_batch"]

_STEP_SQL = f"INSERT OR REPLACE INTO slatmon_steps VALUES ({', '.join('?' * len(STEP_COLS))})"


def _layer_ids(rows: Sequence[LayerObs], ids: dict[str, int], new: dict[str, int]) -> list[int]:
    out = []
    for r in rows:
        i = ids.get(r.layer)
        if i is None:
            i = new.get(r.layer)
            if i is None:
                i = new[r.layer] = len(ids) + len(new)
        out.append(i)
    return out


def _events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    if events:
        conn.executemany("INSERT INTO slatmon_events (step, kind, layer, tensor, detail) VALUES (?, ?, ?, ?, ?)",
                         [event_row(e) for e in events])


def write_batch(conn: sqlite3.Connection, items: Sequence[tuple[Any, ...]], meta: dict[str, Any],
                ids: dict[str, int]) -> dict[str, int]:
    """Write `items` ("step", StepObs, rows, events) / ("events", events) and `meta` in one transaction.
    `ids` are the layer ids already in the record (not changed here); returns the ids this batch added,
    valid only once it committed. Raises what SQLite or the encoding raise (rolled back)."""
    new: dict[str, int] = {}
    with conn:
        for item in items:
            if item[0] == "events":
                _events(conn, item[1])
                continue
            _, step, rows, events = item
            conn.execute(_STEP_SQL, step_row(step))
            if rows:
                data = blocks.encode(rows, _layer_ids(rows, ids, new), LAYER_FIELDS)
                conn.execute("INSERT OR REPLACE INTO slatmon_layer_blocks VALUES (?, ?, ?)",
                             (step.step, len(rows), data))
            _events(conn, events)
        if new:
            conn.executemany("INSERT INTO slatmon_layer_names (id, name) VALUES (?, ?)",
                             [(i, name) for name, i in new.items()])
        if meta:
            conn.executemany("INSERT OR REPLACE INTO slatmon_meta VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in meta.items()])
    return new
