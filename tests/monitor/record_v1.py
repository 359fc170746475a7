"""A schema-1 run record (slat-monitor 0.1) rebuilt from tests/data/record_v1.json: the tables exactly as
that code wrote them, and the History its read_record returned."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from monitor.history import History

DATA = Path(__file__).resolve().parents[1] / "data" / "record_v1.json"


def v1_record(path: Path) -> History:
    """Write the 0.1 record to `path`; returns the History 0.1 read from it (missing fields default)."""
    data: dict[str, Any] = json.loads(DATA.read_text())
    with sqlite3.connect(path) as conn:
        for name, table in sorted(data["tables"].items(), key=lambda kv: kv[0] != "slatmon_meta"):
            if name != "sqlite_sequence":
                conn.execute(table["sql"])
            marks = ", ".join("?" * len(table["columns"]))
            conn.executemany(f"INSERT INTO {name} ({', '.join(table['columns'])}) VALUES ({marks})", table["rows"])
    conn.close()
    return History.from_dict(data["history"])


def as_json(h: History) -> str:
    """The History as comparable text (NaN equal to NaN)."""
    return json.dumps(h.to_dict(), sort_keys=True)
