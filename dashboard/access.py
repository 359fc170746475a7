"""What a visitor of the triage page may open: records under one folder, the one Prometheus the page was
started with, PromQL durations, and only through a Host name the page answers to.

These limits come from the start-up side only (`slat-monitor triage` arguments, passed through the
environment, or `streamlit run app.py -- ARGS`); no query parameter or sidebar field changes them.
Every refusal is a SourceProblem whose text is safe to show: a refused record path gets the same words
whether or not a file exists there, so the page is no oracle for files outside the folder.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from monitor.errors import SourceError
from monitor.sources.prometheus import check_lookback

from .sources import RECORD, Source, SourceProblem

__all__ = ["LOOPBACK_HOSTS", "Limits", "admit", "allowed_hosts", "host_problem", "inside", "limits"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Limits:
    """`records_dir`: the resolved folder records are opened from; `prometheus`: the one Prometheus base
    URL the page reads ("" = none)."""

    records_dir: Path
    prometheus: str = ""


def _start_settings(argv: Sequence[str]) -> dict[str, str | None]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("record", nargs="?")
    parser.add_argument("--records-dir")
    parser.add_argument("--prometheus")
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:
        return {}
    return vars(known)


def limits(argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Limits:
    """The page's limits from its start-up arguments (argv wins over SLATMON_RECORDS_DIR /
    SLATMON_RECORD / SLATMON_PROMETHEUS). Records folder default: the start record's folder, else the
    current directory."""
    env = os.environ if env is None else env
    given = {k: v for k, v in _start_settings(argv).items() if v}
    record = given.get("record") or env.get("SLATMON_RECORD", "")
    folder = given.get("records_dir") or env.get("SLATMON_RECORDS_DIR", "")
    if not folder:
        folder = str(Path(record).expanduser().parent) if record else "."
    prometheus = given.get("prometheus") or env.get("SLATMON_PROMETHEUS", "")
    return Limits(records_dir=Path(os.path.realpath(Path(folder).expanduser())), prometheus=prometheus.strip())


def _resolve(path: str | os.PathLike[str], folder: Path) -> Path | None:
    """`path` (relative ones taken from `folder`) with `~`, symlinks and `..` resolved, when that lies
    under `folder`; None otherwise, and for a path that is no path at all (a NUL byte in it)."""
    try:
        resolved = Path(os.path.realpath(folder / Path(path).expanduser()))
    except (ValueError, OSError):
        return None
    return resolved if resolved.is_relative_to(folder) else None


def inside(path: str | os.PathLike[str], folder: Path) -> Path | None:
    """`path` resolved (_resolve()) when that is a regular file under `folder`; None otherwise."""
    resolved = _resolve(path, folder)
    return resolved if resolved is not None and resolved.is_file() else None


def _record_problem(requested: str, lim: Limits) -> tuple[str, str | None]:
    """(the resolved path, why it may not be opened or None)."""
    resolved = _resolve(requested, lim.records_dir)
    if resolved is None:
        # The same words for a missing and an existing file: nothing is said about what lies outside.
        return requested, (f"refused: this page opens run records under {lim.records_dir} only, and {requested!r} "
                           "is not there (start it with slat-monitor triage --records-dir DIR to open another folder)")
    if resolved.exists() and not resolved.is_file():
        return requested, f"{requested!r} is not a run record (not a regular file)"
    return str(resolved), None


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/") == b.strip().rstrip("/")


def admit(source: Source, lim: Limits) -> Source:
    """`source` as the page may read it: the record path resolved inside the records folder, the
    Prometheus the page was started with, a valid lookback. Otherwise SourceProblem with one line per
    reason (all of them, not just the first)."""
    problems = []
    if source.prometheus and not _same_url(source.prometheus, lim.prometheus):
        started = f"the one it was started with, {lim.prometheus}" if lim.prometheus else \
            "the one given at start (slat-monitor triage --prometheus URL), and none was"
        problems.append(f"refused: this page reads only {started}; not {source.prometheus!r}")
    try:
        check_lookback(source.lookback)
    except SourceError as exc:
        problems.append(str(exc))
    record = source.record.strip()
    if source.kind == RECORD and record:
        record, problem = _record_problem(record, lim)
        problems += [problem] if problem else []
    if problems:
        raise SourceProblem("\n".join(problems))
    return replace(source, prometheus=lim.prometheus, record=record if source.kind == RECORD else source.record)


def allowed_hosts(configured: Iterable[str], address: str | None) -> tuple[str, ...]:
    """The Host names the page answers to: Streamlit's `server.allowedHosts` when set (`slat-monitor
    triage` sets it), else the loopback names and the bound address."""
    names = tuple(h for h in configured if h)
    if names:
        return names
    bound = (address,) if address and address not in ("0.0.0.0", "::") else ()
    return tuple(dict.fromkeys(LOOPBACK_HOSTS + bound))


def _hostname(host: str) -> str | None:
    try:
        parts = urlsplit(f"//{host}")
        _ = parts.port  # a port that is not a number is an invalid Host
    except ValueError:
        return None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return (parts.hostname or "").rstrip(".") or None


def host_problem(headers: Mapping[str, str], allowed: Iterable[str]) -> str | None:
    """Why the request with these headers must get no data (a Host name the page does not answer to:
    DNS rebinding), or None. No headers at all means no HTTP request (AppTest): nothing to check."""
    if not headers:
        return None
    host = next((v for k, v in headers.items() if k.lower() == "host"), "")
    name = _hostname(host)
    names = [a.strip().lower().rstrip(".") for a in allowed]
    if "*" in names or (name is not None and (name in names or any(
            a.startswith("*.") and name.endswith(a[1:]) for a in names))):
        return None
    return (f"refused: this page was opened as {host!r}, a name it does not answer to. Open it by one of "
            f"{', '.join(names)}, or start it with `slat-monitor triage --allow-host NAME`.")
