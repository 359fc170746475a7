"""The record file: created without overwriting anything, watched for removal, finalised, discarded.

`create()` runs in the caller of `watch()` (a bad path fails there, with a ConfigError naming `record`),
and again in the writer thread when the file was removed mid-run. The path is made absolute and handed
to SQLite as a plain file name (never a URI: `#`, `?` and `%` are just characters).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .schema import LAYER_FIELDS, SCHEMA_VERSION, ddl

__all__ = ["BUSY_TIMEOUT_S", "RecordFile", "check_argument", "create", "discard", "drop", "finalise", "moved"]

log = logging.getLogger("monitor")

BUSY_TIMEOUT_S = 0.5  # how long one write waits for another process's lock before it counts as failed
_SIDE = ("-wal", "-shm")
PAGE_SIZE = 8192  # three blocks of a 100-layer step fit a page (4096: one, the rest of the page empty)


@dataclass
class RecordFile:
    """An open record. `identity`: (device, inode) of the file opened; `created`: this process made the
    file (else it was an empty file the user had made); `side_files`: the -wal/-shm that existed before;
    `own_sides`: (device, inode) of the -wal/-shm this connection made."""

    path: str
    conn: sqlite3.Connection
    identity: tuple[int, int]
    created: bool
    side_files: set[str] = field(default_factory=set)
    own_sides: dict[str, tuple[int, int]] = field(default_factory=dict)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _refuse(record: str, why: str) -> ConfigError:
    return ConfigError(f"watch(): record={record!r} {why}")


def check_argument(record: Any) -> str:
    """`watch(record=...)` as a path string. Raises ConfigError naming `record` for anything but a
    non-empty str or os.PathLike (bytes are refused: pass `os.fsdecode(path)`)."""
    expected = "a file path (str or os.PathLike, e.g. 'runs/NAME.sqlite') or None"
    if isinstance(record, (bytes, bytearray)):
        raise ConfigError(f"watch(): record must be {expected}, got bytes {record!r:.80}; decode it with "
                          "os.fsdecode(path)")
    if not isinstance(record, (str, os.PathLike)):
        raise ConfigError(f"watch(): record must be {expected}, got {type(record).__name__} {record!r:.80}")
    text = os.fspath(record)
    if not isinstance(text, str):
        raise ConfigError(f"watch(): record must be {expected}; {type(record).__name__}.__fspath__() returned "
                          f"{type(text).__name__}")
    if not text:
        raise ConfigError(f"watch(): record must be {expected}, got an empty string")
    if "\0" in text:
        raise ConfigError(f"watch(): record must be {expected}, got a path with a NUL character: {text!r:.80}")
    return text


def _folder(record: str, path: Path) -> None:
    """Make the record's folder, or say which part of the path is in the way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise _refuse(record, f"is under {str(blocker)!r}, which is a file, not a folder; expected a path "
                              "like runs/NAME.sqlite in a folder") from None
    except OSError as exc:
        raise _refuse(record, f"cannot be created: its folder {str(path.parent)!r} cannot be made "
                              f"({exc.strerror or exc}); expected a path in a writable folder") from None


def _claim(record: str, path: str) -> bool:
    """Create the file exclusively (True), or accept an empty regular file the user made (False)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise _refuse(record, f"cannot be created in {os.path.dirname(path)!r} ({exc.strerror or exc}); "
                              "expected a path in a writable folder") from None
    try:
        st = os.stat(path)
    except OSError as exc:  # a link to nowhere (O_EXCL never follows links), or the file just went
        what = "is a link to a file that does not exist" if os.path.islink(path) else "cannot be used"
        raise _refuse(record, f"{what} ({exc.strerror or exc}); expected a new file path in a writable "
                              "folder") from None
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(record, "is a folder; expected the path of a file in it, e.g. "
                              f"{os.path.join(record, 'run.sqlite')!r}")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(record, "is not a regular file (a device, pipe or socket); expected a new file path")
    if st.st_size > 0:
        raise _refuse(record, "already exists; pass a new path (one record per run and rank) or remove the "
                              "file - an existing record is never overwritten")
    return False


def _initialise(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL mode and the first table: fixed after
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(ddl())
        with conn:
            conn.executemany("INSERT OR REPLACE INTO slatmon_meta VALUES (?, ?)",
                             [("schema", json.dumps(SCHEMA_VERSION)), ("layer_fields", json.dumps(LAYER_FIELDS))])
    except BaseException:
        conn.close()
        raise
    return conn


def create(record: str) -> RecordFile:
    """A new record at `record` (tables made, schema written). Raises ConfigError naming `record`."""
    path = os.path.abspath(record)  # an absolute name never starts with "file:" (no URI parsing)
    _folder(record, Path(path))
    side = {s for s in _SIDE if os.path.lexists(path + s)}
    created = _claim(record, path)
    try:
        conn = _initialise(path)
        st = os.stat(path)
    except (sqlite3.Error, OSError) as exc:
        discard(RecordFile(path, None, None, created, side))  # type: ignore[arg-type]
        raise _refuse(record, f"cannot be written ({exc}); expected a path in a writable folder "
                              "with free space") from None
    own = {s: i for s in _SIDE if s not in side and (i := _identity(path + s)) is not None}
    return RecordFile(path, conn, (st.st_dev, st.st_ino), created, side, own)


def drop(rf: RecordFile) -> None:
    """Close a record whose path no longer names it, and remove its -wal/-shm still at the path: SQLite
    leaves them when the file moved, and a stale WAL beside whatever file comes there next would be
    replayed into it. Side files that are not this connection's own are left alone."""
    rf.conn.close()
    for s, ident in rf.own_sides.items():
        if _identity(rf.path + s) == ident:
            Path(rf.path + s).unlink(missing_ok=True)


def moved(rf: RecordFile) -> str | None:
    """None while the path still names the file being written; else "removed" or "replaced"."""
    try:
        st = os.stat(rf.path)
    except FileNotFoundError:
        return "removed"
    except OSError:
        return None  # cannot tell (e.g. a dropped network mount): the writes themselves will fail
    return None if (st.st_dev, st.st_ino) == rf.identity else "replaced"


def finalise(rf: RecordFile, meta: dict[str, Any]) -> bool:
    """Write the closing `meta`, fold the WAL into the file and leave WAL mode, close. True when the meta
    was written. A connection still open elsewhere (a live triage page) keeps the record in WAL mode."""
    ok = False
    try:
        with rf.conn:
            rf.conn.executemany("INSERT OR REPLACE INTO slatmon_meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in meta.items()])
        ok = True
        rf.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rf.conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        how = "stays in WAL mode" if ok else "was not marked closed"
        log.warning("slat-monitor: run record %s %s (%s)", rf.path, how, exc)
    finally:
        rf.conn.close()
    return ok


def discard(rf: RecordFile) -> None:
    """Undo `create` after a failed watch() (connection closed first): a file this process created is
    removed; an empty file the user made is emptied again. Nothing is touched once the path names
    another file, and -wal/-shm files that were there before stay."""
    try:
        st = os.stat(rf.path)
    except OSError:
        return
    if rf.identity is not None and (st.st_dev, st.st_ino) != rf.identity:
        return
    try:
        if rf.created:
            os.unlink(rf.path)
        else:
            os.truncate(rf.path, 0)
        for s in _SIDE:
            if s not in rf.side_files:
                Path(rf.path + s).unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("slat-monitor: could not remove the unused run record %s (%s)", rf.path, exc)
