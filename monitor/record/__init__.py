"""The run record: a SQLite database written by a background thread, read back as a History.

`RecordWriter` (writer.py) takes immutable observations from the training thread and writes them in
batches, one transaction each; failed writes are retried, what is finally lost is counted
(`slatmon_record_errors_total`) and noted in the record itself (gaps.py). A process killed with SIGKILL
leaves a record readable up to the last batch written; a clean close marks it closed, checkpoints and
leaves WAL mode, so the record is one file. `read_record` (reader.py) opens a record by path, read-only,
without creating any file beside it (opening.py), checks every row (rows.py) and reads schema 1
(slat-monitor 0.1, one SQL row per layer and step) and schema 2 (per-layer rows packed per step,
blocks.py; tables in schema.py).
"""

from __future__ import annotations

from .reader import read_record
from .writer import RecordWriter

__all__ = ["RecordWriter", "read_record"]
