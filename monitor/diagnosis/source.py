"""load_history: a History from whatever the caller has (Watcher, History, record path, Prometheus URL)."""

from __future__ import annotations

import os

from ..errors import RecordError
from ..history import History

__all__ = ["load_history"]


def load_history(source: object, *, run: str | None = None, rank: int | None = None) -> History:
    """A History from a Watcher (`.history()`), a History, a Prometheus base URL (http:// or https://)
    or a run-record path (str / os.PathLike).

    Raises RecordError (missing / not a record / unsupported source type) or SourceError (Prometheus).
    """
    if isinstance(source, History):
        return source
    if callable(getattr(source, "history", None)):
        return source.history()
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        from ..sources.prometheus import read_prometheus

        return read_prometheus(source, run=run, rank=rank)
    if isinstance(source, (str, os.PathLike)):
        from ..record import read_record

        return read_record(os.fspath(source))
    raise RecordError(f"cannot diagnose a {type(source).__name__}: pass a Watcher, a run-record path "
                      "or a Prometheus URL (http://HOST:PORT)")
