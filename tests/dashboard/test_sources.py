"""monitor.dashboard.sources: where the page reads from (env < argv < query parameters) and load()'s errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.dashboard.sources import Source, SourceProblem, defaults, load, parse_rank
from tests.realservers import free_port

from .runs import EPS_RUN


def test_precedence_env_argv_query() -> None:
    env = {"SLATMON_PROMETHEUS": "http://env:9090", "SLATMON_RUN": "env-run", "SLATMON_LOOKBACK": "1d"}
    assert defaults({}, (), env) == Source(kind="prometheus", prometheus="http://env:9090", run="env-run",
                                          lookback="1d")
    argv = ["runs/a.sqlite", "--rank", "2", "--unknown-flag"]
    assert defaults({}, argv, env) == Source(kind="record", record="runs/a.sqlite", prometheus="http://env:9090",
                                            run="env-run", rank=2, lookback="1d")
    # An alert link (?run=&rank=) keeps the configured kind and picks the series.
    link = defaults({"run": "r1", "rank": "0"}, ["--prometheus", "http://argv:9090"], env)
    assert (link.kind, link.prometheus, link.run, link.rank) == ("prometheus", "http://argv:9090", "r1", 0)
    assert defaults({"source": "http://q:9090"}, argv, env).kind == "prometheus"
    assert defaults({"source": "b.sqlite"}, [], env) == Source(kind="record", record="b.sqlite",
                                                               prometheus="http://env:9090", run="env-run",
                                                               lookback="1d")
    assert defaults({}, [], {}) == Source()


def test_parse_rank() -> None:
    assert parse_rank("3") == 3 and parse_rank("") is None and parse_rank(None) is None
    with pytest.raises(SourceProblem, match="rank must be an integer"):
        parse_rank("first")


def test_load_record(records) -> None:
    loaded = load(Source(kind="record", record=str(records["eps"]), run=EPS_RUN, rank=0))
    assert loaded.history.run.run == EPS_RUN and loaded.notes == []
    assert [f.code for f in loaded.findings][:2] == ["adam_eps_underflow", "nonfinite_after_update"]
    assert load(Source(kind="record", record=str(records["eps"]), run="x")).notes == [
        f"the link asks for run 'x', but this record holds run '{EPS_RUN}'"]


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.sqlite").write_bytes(b"")
    cases = [
        (Source(), "no source chosen"),
        (Source(kind="record", record="  "), "no run record given"),
        (Source(kind="record", record=str(tmp_path)), "no run record at"),
        (Source(kind="record", record=str(tmp_path / "empty.sqlite")), "is not a slat-monitor run record"),
        (Source(kind="prometheus", prometheus="localhost:9090"), "is not a Prometheus URL"),
        (Source(kind="prometheus", prometheus=f"http://127.0.0.1:{free_port()}"), "cannot reach Prometheus"),
    ]
    for source, message in cases:
        with pytest.raises(SourceProblem, match=message):
            load(source)
