"""Open a run record for reading: by path, read-only, creating no file, never writing or checkpointing it.

SQLite is given a `file:` URI built by `Path.as_uri()` (every `#`, `?`, `%` percent-encoded), chosen by
the side files already beside the record:
- no `-wal` (a record closed cleanly, or one whose WAL is gone): `mode=ro&immutable=1` - nothing but the
  file to read, no lock taken, no file created (a plain `mode=ro` on a WAL-mode file would create `-wal`
  and `-shm`).
- `-wal` and `-shm` (a live run, or a crashed one): `mode=ro`, which reads the WAL through the existing
  `-shm` like any reader of a live database, and never checkpoints.
- `-wal` without `-shm`, a hot rollback `-journal`, or storage where `mode=ro` fails (a read-only mount):
  a private copy of the file and its `-wal` in a temporary folder, read there and deleted.
The record file is never opened outside SQLite: closing any descriptor of a file drops every POSIX lock
this process holds on it, including the locks of a RecordWriter writing it in this very process (another
process would then take itself for the last connection, checkpoint and delete the live WAL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["open_record"]

def _connect(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=2.0, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens it now: fail here, not later
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _private_copy(path: Path) -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="slatmon-read-") as tmp:
        copy = Path(tmp) / "record.sqlite"
        shutil.copyfile(path, copy)
        for side in ("-wal", "-journal"):
            if os.path.isfile(f"{path}{side}"):
                shutil.copyfile(f"{path}{side}", f"{copy}{side}")
        conn = sqlite3.connect(copy)  # a plain name in a folder of ours: replays the WAL into the copy
        try:
            yield conn
        finally:
            conn.close()


def _direct(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the file itself, or None where only a private copy can be read."""
    uri = path.as_uri()
    side = {s: os.path.exists(f"{path}{s}") for s in ("-wal", "-shm", "-journal")}
    if side["-journal"] or (side["-wal"] and not side["-shm"]):
        return None
    if not side["-wal"]:
        return _connect(f"{uri}?mode=ro&immutable=1")
    try:
        return _connect(f"{uri}?mode=ro")
    except sqlite3.OperationalError:  # e.g. a WAL record on read-only storage
        return None


@contextlib.contextmanager
def open_record(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection for reading the record at `path` (see the module docstring). Raises sqlite3.Error from
    SQLite (e.g. a file that is not a database)."""
    path = path.resolve()  # SQLite names the side files after the file itself, not after a link to it
    conn = _direct(path)
    if conn is None:
        with _private_copy(path) as copy:
            yield copy
        return
    try:
        yield conn
    finally:
        conn.close()
