"""What a scrape serves, prepared off the scrape path: the diagnosis and the per-layer text.

At 10,000 layers the first scrape after a sampled step used to build and render ~80,000 per-layer
samples and run every diagnosis rule over the history in the HTTP thread: seconds, beyond
Prometheus' scrape timeout. Here one daemon thread ("slatmon-prepare") does that work and a scrape
only assembles what was last prepared (globals and counters stay live).

- On demand: a scrape that finds the prepared state older than the tracker's version (or the
  snapshot) wakes the thread; nothing runs while nobody scrapes, so an unscraped run pays nothing.
  Slow rules (> `QUICK_S`) rest between runs so they take at most `RULES_SHARE` of the time: the
  thread shares the interpreter (GIL) with training.
- Freshness: when the last preparation was quick (< `QUICK_S`, small models) the scrape waits for the
  new one (at most `WAIT_S`), so every scrape is exact; when it is slow (large models) the scrape
  answers at once from the last preparation. The per-layer text is published before the rules run
  (fresh numbers first; the findings follow). Once scrapes come at a steady interval, a preparation
  is started ahead of the next scrape (by 1.5x the last per-layer build plus a tenth of the
  interval), so the numbers describe the run a moment before the scrape rather than one interval
  before: same work, better timed; the rules of that round run once the scrape is answered (not
  competing with it for the GIL), so the findings are one interval older than the numbers. The very
  first scrape waits up to `FIRST_WAIT_S`.
- Never "healthy" on stale or failed findings: when something non-finite was seen after the findings
  served were computed, or the diagnosis itself raised (the last findings are kept), a
  `diagnosis_incomplete` warning is added. Errors are counted in `slatmon_monitor_errors_total`
  (`Counters.background_errors`) and logged once per kind.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..diagnosis.engine import incomplete
from ..findings import Finding
from ..history import Event
from ..snapshot import Counters, Snapshot
from .prometheus import SnapshotCollector
from .text import Family, LabelCache, prerender

__all__ = ["FIRST_WAIT_S", "QUICK_S", "RULES_SHARE", "WAIT_S", "Prepared", "Preparer", "next_start"]

log = logging.getLogger("monitor")

QUICK_S = 0.1  # a preparation this quick is waited for (and rules this quick always rerun)
RULES_SHARE = 0.2  # slower rules rest so that they take at most this share of the time
WAIT_S = 2.0
FIRST_WAIT_S = 5.0  # below Prometheus' default 10 s scrape timeout


@dataclass(frozen=True)
class Prepared:
    version: int
    snapshot: Snapshot
    layers: list[Family]  # per-layer families of `snapshot`, text rendered
    findings: list[Finding]
    findings_version: int  # the version the findings were computed at (older while the rules rest)
    failed: str | None  # why the findings could not be computed (the previous ones are kept)
    mark: int  # Preparer._nonfinite_mark() when they were computed
    layer_seconds: float  # the last build of the per-layer text
    rules_seconds: float
    rules_done: float  # time.monotonic() when the rules last finished


def _rest(state: Prepared) -> float:
    """Seconds the rules rest after a run: none when quick, else RULES_SHARE of the time at most."""
    return 0.0 if state.rules_seconds < QUICK_S else state.rules_seconds * (1 / RULES_SHARE - 1)


def _quick(state: Prepared) -> bool:
    return max(state.layer_seconds, state.rules_seconds) < QUICK_S


def next_start(scrapes: list[float], state: Prepared) -> float | None:
    """When (time.monotonic) to start preparing so that the per-layer text is done by the next scrape:
    Prometheus scrapes at a fixed interval (the median of the last gaps); lead = 1.5x the last per-layer
    build + a tenth of the interval (the rules follow it and may finish after that scrape). None before
    3 scrapes (no rhythm yet)."""
    if len(scrapes) < 3:
        return None
    interval = statistics.median(b - a for a, b in zip(scrapes, scrapes[1:]))
    return scrapes[-1] + interval - 1.5 * state.layer_seconds - 0.1 * interval


class Preparer:
    """Prepares `collector`'s costly parts for the state `version()` / `snapshot()` describe, in a daemon
    thread; `families()` is what a scrape serves. `findings()` runs the diagnosis (in that thread)."""

    def __init__(self, collector: SnapshotCollector, labels: LabelCache, *, snapshot: Callable[[], Snapshot],
                 version: Callable[[], int], findings: Callable[[], list[Finding]],
                 counters: Callable[[], Counters], events: Callable[[], list[Event]]) -> None:
        self._collector, self.labels = collector, labels
        self._snapshot, self._version, self._findings = snapshot, version, findings
        self._counters, self._events = counters, events
        self._state: Prepared | None = None
        self._wanted = self._closed = self._wake_after = self._rules_after = False
        self._cond = threading.Condition()
        self._logged: set[str] = set()
        self._scrapes: list[float] = []  # monotonic times of the last scrapes
        self._started = 0.0  # when the last preparation started
        self._thread = threading.Thread(target=self._run, name="slatmon-prepare", daemon=True)
        self._thread.start()

    def families(self) -> list[Family]:
        """Every family of one scrape, from the newest prepared state (waiting as the module says)."""
        state = self._fresh()
        if state is None or state.findings_version < 0:  # not prepared in time: no claim of health
            pending = incomplete("Diagnosis not ready yet", ["the first diagnosis of this run is still being "
                                                             "computed"], self._counters().step)
            if state is None:
                return self._collector.assemble(self._snapshot(), [], [pending])
            return self._collector.assemble(state.snapshot, state.layers, [pending])
        return self._collector.assemble(state.snapshot, state.layers, self._guard(state))

    def error(self, exc: BaseException, where: str = "scrape") -> None:
        """Count an error of the scrape path; log the first of each kind (never raised into a scrape)."""
        self._counters().count_background_error()
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged:
            self._logged.add(key)
            log.error("slat-monitor: error in the %s (the scrape is still answered; further errors are counted in "
                      "slatmon_monitor_errors_total): %r", where, exc, exc_info=exc)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)  # a rules run under way is not waited for: it publishes to nobody

    # -- scrape side ----------------------------------------------------------------------
    def _fresh(self) -> Prepared | None:
        version, snap = self._version(), self._snapshot()
        with self._cond:
            self._scrapes = [*self._scrapes[-4:], time.monotonic()]
            state = self._state
            if (state is not None and state.version == state.findings_version == version
                    and state.snapshot is snap):
                return state
            quick = state is not None and _quick(state)
            wait = FIRST_WAIT_S if state is None else WAIT_S if quick else 0.0
            if wait:  # a full preparation, waited for
                self._wanted, self._rules_after = True, False
            elif next_start(self._scrapes, state) is None:  # no rhythm yet: prepare once this scrape is
                self._wake_after = True  # answered (served()), not competing with it for the GIL
            self._cond.notify_all()  # the thread re-plans with this scrape's time
            self._cond.wait_for(lambda: self._closed or (self._state is not None and self._state.version >= version
                                                         and self._state.findings_version >= version), timeout=wait)
            return self._state

    def served(self) -> None:
        """The scrape's response is sent: start what it asked for without waiting (a preparation with no
        rhythm yet; with one, the rules after the planned per-layer build)."""
        with self._cond:
            if self._wake_after or self._rules_after:
                self._wake_after, self._wanted = False, True
                self._cond.notify_all()

    def _nonfinite_mark(self) -> int:
        """Grows whenever something non-finite is seen (sampled steps with NaN/Inf, non-finite events)."""
        return sum(self._counters().nonfinite_steps.values()) + sum(e.kind == "nonfinite" for e in self._events())

    def _guard(self, state: Prepared) -> list[Finding]:
        """The prepared findings, plus `diagnosis_incomplete` when they cannot be trusted to be complete:
        the diagnosis raised, or something non-finite was seen after they were computed (and they hold
        nothing critical already)."""
        if state.failed is not None:
            return [*state.findings, incomplete("Diagnosis incomplete: the rules could not run", [state.failed],
                                                self._counters().step)]
        if self._nonfinite_mark() > state.mark and not any(f.severity == "critical" for f in state.findings):
            step = self._counters().step
            return [*state.findings, incomplete(
                "Non-finite values seen; the diagnosis of the newest steps is not ready yet",
                [f"by step {step}: non-finite values the findings (from an earlier step) do not cover yet; "
                 "the next scrape brings the new diagnosis"], step)]
        return state.findings

    # -- preparing thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._wanted or self._closed):
                    delay = self._until_next_scrape()
                    if delay == 0.0:
                        break
                    self._cond.wait(delay)  # None: until a scrape asks (or re-plans)
                if self._closed:
                    return
                planned, rules_only = not self._wanted, self._wanted and self._rules_after
                self._wanted, self._rules_after = False, planned  # planned: the rules once that scrape is served
                if not rules_only:
                    self._started = time.monotonic()
            stages = [self._prepare_layers, self._prepare_findings]  # fresh numbers first, then findings
            for stage in stages[1:] if rules_only else stages[:1] if planned else stages:
                try:
                    state = stage(self._state)
                except Exception as exc:  # a bug here must not end the thread: scrapes keep the last state
                    self.error(exc, "scrape preparation")
                    break
                if state is None:
                    break
                with self._cond:
                    self._state = state
                    self._cond.notify_all()

    def _until_next_scrape(self) -> float | None:
        """Seconds until the preparation planned for the next scrape (0: now), or None: none planned
        (no rhythm yet, or it already started)."""
        state = self._state
        if state is None or _quick(state):
            return None  # quick: every scrape waits for its own preparation instead
        target = next_start(self._scrapes, state)
        if target is None or self._started >= target:
            return None
        return max(0.0, target - time.monotonic())

    def _prepare_layers(self, last: Prepared | None) -> Prepared:
        """The per-layer text of the newest snapshot (the findings as they were: see _prepare_findings)."""
        version = self._version()
        snap = self._snapshot()  # read after the version: a snapshot newer than it is only prepared again
        if last is not None and last.snapshot is snap:
            return dataclasses.replace(last, version=version)
        t0 = time.perf_counter()
        try:
            layers = self._collector.layer_families(snap)
            prerender(layers, self.labels)
        except Exception as exc:
            self.error(exc, "per-layer export")
            layers = []
        seconds = time.perf_counter() - t0
        if last is None:  # no findings yet (findings_version -1): the first scrape waits for them
            return Prepared(version, snap, layers, [], -1, None, 0, seconds, 0.0, 0.0)
        return dataclasses.replace(last, version=version, snapshot=snap, layers=layers, layer_seconds=seconds)

    def _prepare_findings(self, last: Prepared | None) -> Prepared | None:
        """The diagnosis at `last.version`, unless the findings are of that version already or resting."""
        if last is None or not self._rules_due(last, last.version):
            return None
        mark = self._nonfinite_mark()  # before the diagnosis reads the history: what it covers at least
        t0 = time.monotonic()
        try:
            findings, failed = self._findings(), None
        except Exception as exc:
            self.error(exc, "diagnosis")
            findings, failed = last.findings, f"{type(exc).__name__}: {exc}"[:300]
        done = time.monotonic()
        return dataclasses.replace(last, findings=findings, findings_version=last.version,
                                   failed=failed, mark=mark, rules_seconds=done - t0, rules_done=done)

    @staticmethod
    def _rules_due(last: Prepared, version: int) -> bool:
        """The history moved since the findings, and the rules are quick or have rested long enough: at
        most RULES_SHARE of the time goes to them (7 s a run at 5,000 layers x 220 steps)."""
        if last.findings_version == version:
            return False
        return time.monotonic() - last.rules_done >= _rest(last)
