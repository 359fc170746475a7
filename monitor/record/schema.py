"""The run record's tables and schema versions, and the encoding of step and event rows.

Schema 2 (written now):
- `slatmon_meta` (key -> JSON): "schema" (2), "run" (RunInfo), "preflight" (findings), "layer_fields" (the
  LayerObs fields a layer block holds, in order), "missing" (observations that could not be written,
  record/gaps.py), "begins" (this file was started again mid-run), "closed" (written by a clean close).
- `slatmon_steps`: one row per StepObs (one column per field; lr / eps as JSON lists).
- `slatmon_layer_names` (id -> layer name) and `slatmon_layer_blocks` (step -> one packed block of that
  step's LayerObs rows, record/blocks.py): per-layer rows cost bytes per measured value, not per row.
- `slatmon_events`: one row per Event (detail as JSON).
Schema 1 (slat-monitor 0.1): no "schema" meta key; `slatmon_layers`, one row per (step, layer). Still read.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from typing import Any

from ..history import Event, LayerObs, StepObs

__all__ = ["LAYER_FIELDS", "NAN", "SCHEMA_VERSION", "STEP_COLS", "V1_LAYER_COLS", "ddl", "event_row", "step_row"]

SCHEMA_VERSION = 2
STEP_COLS = [f.name for f in fields(StepObs)]
LAYER_FIELDS = [f.name for f in fields(LayerObs) if f.name not in ("step", "layer")]
V1_LAYER_COLS = ["step", "layer", *LAYER_FIELDS]
NAN = "NaN"  # SQLite stores a float NaN as NULL ("not measured"): step rows keep it as this text


def ddl() -> str:
    """The tables of a new record (schema 2)."""
    return f"""
CREATE TABLE IF NOT EXISTS slatmon_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slatmon_steps ({", ".join(STEP_COLS)}, PRIMARY KEY (step));
CREATE TABLE IF NOT EXISTS slatmon_layer_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS slatmon_layer_blocks (step INTEGER PRIMARY KEY, rows INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS slatmon_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
    step INTEGER, kind TEXT, layer TEXT, tensor TEXT, detail TEXT);
"""


def _encode(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return NAN
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def step_row(step: StepObs) -> list[Any]:
    """The `slatmon_steps` row of `step`, in STEP_COLS order."""
    s = asdict(step)
    return [_encode(s[c]) for c in STEP_COLS]


def event_row(e: Event) -> tuple[Any, ...]:
    """(step, kind, layer, tensor, detail JSON) of `e`."""
    return (e.step, e.kind, e.layer, e.tensor, json.dumps(e.detail))
