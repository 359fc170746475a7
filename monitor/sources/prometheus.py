"""Read a watched run back from Prometheus' HTTP API (stdlib only) as a History.

One instant query with a range selector fetches the raw samples of every slatmon_* series of the run
and rank (`{__name__=~"slatmon_.+", run="R", rank="K"}[LOOKBACK]`), so nothing is resampled; see
`timeline.build_history` for how scrapes become steps. Errors are SourceError with a message that
says what to check (URL, that the run is scraped, which runs exist).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import SourceError
from ..history import Event, History
from .timeline import Series, build_history

__all__ = ["STATUS_ORDER", "check_lookback", "list_runs", "read_all_ranks", "read_prometheus", "run_statuses"]

STATUS_ORDER = ("critical", "warning", "info", "healthy")  # worst first
_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
_DETAIL_CHARS = 300  # of a server's error text in our messages: enough to act on, not a page of HTML


def check_lookback(lookback: str) -> str:
    """`lookback` if it is a PromQL duration (e.g. 7d, 2h, 1h30m); SourceError otherwise. It goes into
    PromQL as it is, so nothing else may."""
    if not isinstance(lookback, str) or not _DURATION.fullmatch(lookback):
        raise SourceError(f"lookback {lookback!r} is not a PromQL duration: expected a number and a unit "
                          "(ms, s, m, h, d, w, y), e.g. 7d, 2h or 1h30m")
    return lookback


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + f"... ({len(text)} characters)"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _query(base: str, promql: str, timeout: float) -> dict[str, Any]:
    """POST /api/v1/query; the `data` object. SourceError for every failure, naming the URL."""
    url = base.rstrip("/") + "/api/v1/query"
    body = urllib.parse.urlencode({"query": promql}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=timeout) as resp:
            payload = json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, OSError):
            answer = json.loads(exc.read().decode())
            detail = answer.get("error", "") if isinstance(answer, dict) else ""
        raise SourceError(f"Prometheus at {base} answered HTTP {exc.code} to {promql!r}"
                          + (f": {_short(detail)}" if detail else " (is this a Prometheus server?)")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach Prometheus at {base} ({reason}); is it running? "
                          "(`slat-monitor stack` starts one)") from None
    except ValueError:
        raise SourceError(f"{base} did not answer with Prometheus API JSON: is the URL the server's base "
                          "URL, e.g. http://127.0.0.1:9090?") from None
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        raise SourceError(f"Prometheus at {base} rejected {promql!r}: {_short(error)}")
    data = payload.get("data")
    return data if isinstance(data, dict) else {}


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def list_runs(base: str, lookback: str = "7d", timeout: float = 10.0) -> list[tuple[str, int]]:
    """(run, rank) pairs that reported slatmon_step within `lookback`, sorted."""
    check_lookback(lookback)
    data = _query(base, f"count by (run, rank) (last_over_time(slatmon_step[{lookback}]))", timeout)
    out = set()
    for item in data.get("result", []):
        labels = item.get("metric", {})
        rank = labels.get("rank", "0")
        out.add((labels.get("run", ""), int(rank) if rank.lstrip("-").isdigit() else 0))
    return sorted(out)


def run_statuses(base: str, lookback: str = "7d", timeout: float = 10.0) -> dict[tuple[str, int], str]:
    """{(run, rank): the worst severity among the findings its watcher reported last, or "healthy"}
    for every run that reported slatmon_step within `lookback`."""
    out = {key: "healthy" for key in list_runs(base, lookback, timeout)}  # checks lookback
    data = _query(base, f"count by (run, rank, severity) (last_over_time(slatmon_finding[{lookback}]))", timeout)
    for item in data.get("result", []):
        labels = item.get("metric", {})
        rank = labels.get("rank", "0")
        key = (labels.get("run", ""), int(rank) if rank.lstrip("-").isdigit() else 0)
        severity = labels.get("severity")
        if key in out and severity in STATUS_ORDER and STATUS_ORDER.index(severity) < STATUS_ORDER.index(out[key]):
            out[key] = severity
    return out


def _pick(runs: list[tuple[str, int]], run: str | None, rank: int | None, base: str) -> tuple[str, int]:
    if not runs:
        raise SourceError(f"no slatmon_* series in Prometheus at {base}: is the watched process scraped "
                          "(see Status > Targets), and is the lookback long enough?")
    names = sorted({r for r, _ in runs})
    if run is None:
        if len(names) > 1:
            raise SourceError(f"Prometheus at {base} has several runs ({', '.join(names)}): pick one with --run")
        run = names[0]
    ranks = sorted(k for r, k in runs if r == run)
    if not ranks:
        raise SourceError(f"run {run!r} not found in Prometheus at {base}; runs there: {', '.join(names)}")
    if rank is None:
        return run, ranks[0]
    if rank not in ranks:
        raise SourceError(f"run {run!r} has no rank {rank} in Prometheus at {base}; ranks: {ranks}")
    return run, rank


def read_prometheus(base: str, *, run: str | None = None, rank: int | None = None, lookback: str = "7d",
                    timeout: float = 10.0) -> History:
    """A History of `run` / `rank` (defaults: the only run, its lowest rank) from raw samples within
    `lookback` (a PromQL duration). Raises SourceError (unreachable, not Prometheus, no such run)."""
    run, rank = _pick(list_runs(base, lookback, timeout), run, rank, base)
    selector = f'{{__name__=~"slatmon_.+",run={_quote(run)},rank={_quote(str(rank))}}}[{lookback}]'
    data = _query(base, selector, timeout)
    series: Series = []
    for item in data.get("result", []):
        values = [(float(t), _float(v)) for t, v in item.get("values", [])]
        series.append((dict(item.get("metric", {})), values))
    return build_history(series, run, rank)


def read_all_ranks(base: str, *, run: str | None = None, lookback: str = "7d", timeout: float = 10.0) -> list[History]:
    """One History per rank of `run` (default: the only run), lowest rank first."""
    runs = list_runs(base, lookback, timeout)
    run, _ = _pick(runs, run, None, base)
    firsts = _query(base, f"min by (rank) (min_over_time(slatmon_nonfinite_local_first_step{{run={_quote(run)}}}"
                          f"[{lookback}]))", timeout)
    local = {item["metric"].get("rank", "0"): int(_float(item["value"][1])) for item in firsts.get("result", [])}
    out = []
    for k in sorted(k for r, k in runs if r == run):
        h = read_prometheus(base, run=run, rank=k, lookback=lookback, timeout=timeout)
        if str(k) in local:  # the exporter's own account: scrapes may have missed the step itself
            h.events.append(Event(local[str(k)], "nonfinite", None, "local", {"source": "prometheus"}))
        out.append(h)
    return out
