"""Where the triage page reads from, and the reading itself: a run record (SQLite) or a Prometheus server.

The source is prefilled from, lowest precedence first: the environment (SLATMON_RECORD,
SLATMON_PROMETHEUS, SLATMON_RUN, SLATMON_RANK, SLATMON_LOOKBACK), the script's command line
(`streamlit run dashboard/app.py -- [RECORD] [--prometheus URL] [--run NAME] [--rank N]`) and the page's
query parameters (`?run=NAME&rank=N` as the alert annotations link it, plus `record=`, `prometheus=`,
`source=` (a path or an http(s) URL), `lookback=`). The sidebar can change the record and the lookback;
what a visitor may open at all is limited by access.py (records folder, the start-up Prometheus).

`load()` turns every failure to read into a `SourceProblem` whose message says what was wrong; it never
lets a traceback through (a missing or damaged file, a file that is not a record, an unreachable
Prometheus).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from monitor.diagnosis import run_rules
from monitor.errors import SlatMonitorError
from monitor.findings import Finding
from monitor.history import History

__all__ = ["ENV", "Loaded", "Source", "SourceProblem", "defaults", "load", "parse_rank", "prometheus_runs",
           "worst_first"]

log = logging.getLogger("dashboard")
RECORD, PROMETHEUS = "record", "prometheus"
ENV = {"record": "SLATMON_RECORD", "prometheus": "SLATMON_PROMETHEUS", "run": "SLATMON_RUN",
       "rank": "SLATMON_RANK", "lookback": "SLATMON_LOOKBACK"}
DEFAULT_LOOKBACK = "7d"


class SourceProblem(Exception):
    """A source the page cannot read; str() is the message to show (what was wrong, what to check)."""


@dataclass(frozen=True)
class Source:
    """What to read. `kind` is "record", "prometheus" or "" (nothing chosen yet); both locations are
    kept so the sidebar can switch between them. `run` / `rank` select the series in Prometheus; for a
    record they are only checked against what the record holds."""

    kind: str = ""
    record: str = ""
    prometheus: str = ""
    run: str | None = None
    rank: int | None = None
    lookback: str = DEFAULT_LOOKBACK

    def describe(self) -> str:
        if self.kind == RECORD:
            return f"run record {self.record}"
        if self.kind == PROMETHEUS:
            who = f" run {self.run}" if self.run else ""
            return f"Prometheus {self.prometheus}{who}" + (f" rank {self.rank}" if self.rank is not None else "")
        return "no source"


@dataclass
class Loaded:
    """A read source: the History, its ranked findings, and `notes` (mismatches worth a warning)."""

    source: Source
    history: History
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)


def parse_rank(text: str | int | None) -> int | None:
    """`rank` from a query parameter, argument or environment value; None for empty. SourceProblem if not
    an integer."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise SourceProblem(f"rank must be an integer (the `rank` label), got {text!r}") from None


def _layer(values: Mapping[str, str | None]) -> dict[str, str]:
    """The non-empty settings of one layer (env, argv or query), with `source=` resolved by its shape."""
    out = {k: str(v) for k, v in values.items() if v not in (None, "")}
    generic = out.pop("source", None)
    if generic and RECORD not in out and PROMETHEUS not in out:
        out[PROMETHEUS if generic.startswith(("http://", "https://")) else RECORD] = generic
    return out


def _argv_settings(argv: Sequence[str]) -> dict[str, str | None]:
    """Settings from `streamlit run app.py -- ARGS`; unknown arguments are ignored."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("record", nargs="?")
    for name in ("--prometheus", "--run", "--rank", "--lookback"):
        parser.add_argument(name)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:
        raise SourceProblem(f"cannot parse the page's command line {' '.join(argv)!r}") from None
    return vars(known)


def defaults(query: Mapping[str, str], argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Source:
    """The source to start with: env < argv < query parameters. The most specific layer that names a
    record or a Prometheus URL decides the kind; run/rank/lookback are taken from wherever they are set
    (an alert link `?run=R&rank=K` on a page started with `--prometheus URL` reads R/K from that URL)."""
    env = os.environ if env is None else env
    layers = [_layer({k: env.get(v) for k, v in ENV.items()}), _layer(_argv_settings(argv)),
              _layer({k: query.get(k) for k in ("record", "prometheus", "source", "run", "rank", "lookback")})]
    merged: dict[str, str] = {}
    kind = ""
    for layer in layers:
        merged.update(layer)
        if RECORD in layer or PROMETHEUS in layer:
            kind = RECORD if RECORD in layer else PROMETHEUS  # both in one layer: the record is more specific
    return Source(kind=kind, record=merged.get(RECORD, ""), prometheus=merged.get(PROMETHEUS, ""),
                  run=merged.get("run"), rank=parse_rank(merged.get("rank")),
                  lookback=merged.get("lookback", DEFAULT_LOOKBACK))


def _read(source: Source) -> History:
    if source.kind == RECORD:
        from monitor.record import read_record

        if not source.record.strip():
            raise SourceProblem("no run record given: enter the path of a RUN.sqlite written by "
                                "monitor.watch(..., record=PATH)")
        return read_record(Path(source.record.strip()).expanduser())
    if source.kind == PROMETHEUS:
        from monitor.sources.prometheus import read_prometheus

        url = source.prometheus.strip()
        if not url.startswith(("http://", "https://")):
            raise SourceProblem(f"{url!r} is not a Prometheus URL: expected the server's base URL, "
                                "e.g. http://127.0.0.1:9090")
        return read_prometheus(url, run=source.run or None, rank=source.rank, lookback=source.lookback or "7d")
    raise SourceProblem("no source chosen: pick a run record or a Prometheus URL in the sidebar")


def load(source: Source) -> Loaded:
    """Read `source` and run the diagnosis. SourceProblem (a message naming what was wrong) for a missing
    file, a file that is not a run record, an unreachable Prometheus, an unknown run or rank."""
    try:
        history = _read(source)
    except (SlatMonitorError, SourceProblem) as exc:
        raise SourceProblem(str(exc)) from None
    except Exception as exc:  # a damaged record or another version's: one message, never a traceback
        log.warning("could not read %s", source.describe(), exc_info=True)
        where = source.record if source.kind == RECORD else source.prometheus
        raise SourceProblem(f"could not read {where}: {type(exc).__name__}: {exc}") from None
    notes = []
    if source.kind == RECORD:
        held = history.run
        if source.run and source.run != held.run:
            notes.append(f"the link asks for run {source.run!r}, but this record holds run {held.run!r}")
        if source.rank is not None and source.rank != held.rank:
            notes.append(f"the link asks for rank {source.rank}, but this record holds rank {held.rank}")
    else:
        source = replace(source, run=history.run.run, rank=history.run.rank)
    return Loaded(source=source, history=history, findings=run_rules(history), notes=notes)


def prometheus_runs(url: str, lookback: str = DEFAULT_LOOKBACK) -> dict[tuple[str, int], str]:
    """{(run, rank): status} of the runs Prometheus at `url` holds (status: the worst severity its
    watcher reports, or "healthy"), or {} when it cannot say (load() reports why)."""
    from monitor.sources.prometheus import run_statuses

    if not url.startswith(("http://", "https://")):
        return {}
    try:
        return run_statuses(url, lookback or DEFAULT_LOOKBACK, timeout=5.0)
    except (SlatMonitorError, OSError, ValueError):
        return {}


def worst_first(statuses: dict[tuple[str, int], str]) -> list[tuple[str, int]]:
    """(run, rank) pairs, the worst status first, then by name."""
    from monitor.sources.prometheus import STATUS_ORDER

    return sorted(statuses, key=lambda k: (STATUS_ORDER.index(statuses[k]), k))
