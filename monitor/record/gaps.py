"""Which observations of a run are not in its record, and the History events that say so.

The writer meets observations in the order the training thread queued them and calls `written(step)`
or `lost(step, reason)` for each; lost ones in a row with the same reason form one span. When the file
itself is lost (removed or replaced mid-run), everything written to it becomes one span too. The spans
go to the record's meta "missing" and, read back (or live, from the writer), become `record_gap` events;
a schema-2 record without meta "closed" gets a `record_unclosed` event (rule: record_incomplete).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..history import Event

__all__ = ["Gaps", "Span", "record_events", "spans_from_meta"]


@dataclass
class Span:
    """`count` observations (steps, or batches of events) between steps `first` and `last` that are not
    in the record, and why."""

    first: int
    last: int
    count: int
    reason: str

    def event(self) -> Event:
        return Event(self.first, "record_gap", None, None,
                     {"first": self.first, "last": self.last, "observations": self.count, "reason": self.reason})


class Gaps:
    """The writer thread's bookkeeping of what reached the current file and what did not."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._open: Span | None = None  # the span lost observations extend (nothing written since)
        self._file: list[int] | None = None  # first step, last step, count written to the current file

    def written(self, step: int) -> None:
        self._open = None
        f = self._file
        self._file = [step, step, 1] if f is None else [min(f[0], step), max(f[1], step), f[2] + 1]

    def lost(self, step: int, reason: str) -> None:
        s = self._open
        if s is not None and s.reason == reason:
            s.first, s.last, s.count = min(s.first, step), max(s.last, step), s.count + 1
            return
        self._open = Span(step, step, 1, reason)
        self.spans.append(self._open)

    def file_lost(self, reason: str) -> None:
        """Everything written to the current file is gone (the file was removed or replaced)."""
        if self._file is not None:
            self.spans.append(Span(*self._file, reason))
        self._file, self._open = None, None

    def to_meta(self) -> dict[str, Any]:
        return {"spans": [[s.first, s.last, s.count, s.reason] for s in self.spans]}

    def events(self) -> tuple[Event, ...]:
        return tuple(s.event() for s in sorted(self.spans, key=lambda s: s.first))


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def spans_from_meta(value: Any) -> list[Span]:
    """The spans of a record's meta "missing". Raises ValueError saying what is malformed."""
    spans = value.get("spans") if isinstance(value, dict) else None
    if not isinstance(spans, list):
        raise ValueError(f"expected {{'spans': [[first, last, count, reason], ...]}}, got {value!r:.200}")
    out = []
    for i, s in enumerate(spans):
        if not (isinstance(s, list) and len(s) == 4 and all(_int(x) for x in s[:3]) and isinstance(s[3], str)):
            raise ValueError(f"span {i} is {s!r:.200}, expected [first step, last step, count, reason]")
        out.append(Span(*s))
    return out


def record_events(meta: dict[str, Any], schema: int, last_step: int) -> list[Event]:
    """The record_gap / record_unclosed events of a record's meta. Raises ValueError for a malformed "missing"."""
    spans = spans_from_meta(meta["missing"]) if "missing" in meta else []
    events = [s.event() for s in sorted(spans, key=lambda s: s.first)]
    if schema >= 2 and "closed" not in meta:  # schema 1 wrote no marker: a clean close cannot be told apart
        events.append(Event(last_step, "record_unclosed", None, None, {"last_step": last_step}))
    return events
