"""What the run record lost: counted, logged once per cause, kept as spans of steps (gaps.py).

Owned by the writer thread (the only one that changes it); `view` and `version` are read by other
threads: `view` is an immutable tuple swapped by reference.
"""

from __future__ import annotations

import logging
from typing import Any

from ..history import Event
from ..snapshot import Counters
from .gaps import Gaps

__all__ = ["Losses"]

log = logging.getLogger("monitor")


class Losses:
    """Losses of the record at `path`, counted in `counters.record_errors` (slatmon_record_errors_total)."""

    def __init__(self, path: str, counters: Counters) -> None:
        self.path, self.counters = path, counters
        self.gaps = Gaps()
        self.dirty = False  # the record's meta "missing" is behind
        self.version = 0  # changes whenever `view` does
        self.view: tuple[Event, ...] = ()  # record_gap events of what is lost so far

    def written(self, item: tuple[Any, ...]) -> None:
        if item[0] == "step":
            self.gaps.written(item[1].step)

    def lose(self, item: tuple[Any, ...], reason: str) -> None:
        """Count one observation ("step" or "events" item) that will not be in the record, remember its step."""
        step = item[1].step if item[0] == "step" else min((e.step for e in item[1]), default=0)
        spans = self.gaps.spans
        if self.counters.record_errors == 0 or not spans or spans[-1].reason != reason:
            log.error("slat-monitor: run record %s: step %d could not be written (%s); counted in "
                      "slatmon_record_errors_total and noted in the record as missing", self.path, step, reason)
        self.counters.record_errors += 1
        self.gaps.lost(step, reason)
        self._changed()

    def file_lost(self, reason: str) -> None:
        """The file itself is gone (removed or replaced): one error; what it held becomes a gap."""
        self.counters.record_errors += 1
        self.gaps.file_lost(reason)
        self._changed()

    def meta(self) -> dict[str, Any]:
        """The record's meta "missing"."""
        return self.gaps.to_meta()

    def _changed(self) -> None:
        self.dirty = True
        self.view = self.gaps.events()
        self.version += 1
