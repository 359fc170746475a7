"""The triage page's "Across ranks" section: the run's other ranks, which one broke first, and the
cross-rank findings (monitor.crossrank).

Sibling ranks are found without asking: for a record `runs/a.rank1.sqlite` the files `runs/a.rank*.sqlite`
(monitor.watch's per-rank naming); for Prometheus every rank of the run. Nothing is shown for a run of
one rank.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import streamlit as st

from monitor.crossrank import compare_ranks, rank_lines
from monitor.history import History

from .access import inside
from .mdtext import escape
from .sources import Source

__all__ = ["rank_records", "read_ranks", "render_ranks"]

log = logging.getLogger("dashboard")
_RANKED = re.compile(r"^(?P<stem>.+)\.rank\d+(?P<suffix>\.[^.]*)?$")


def rank_records(record: str) -> list[Path]:
    """Every per-rank record of the run `record` belongs to, by rank number; [] when it is not one."""
    path = Path(record).expanduser()
    m = _RANKED.match(path.name)
    if not m:
        return []
    pattern = re.compile(re.escape(m["stem"]) + r"\.rank(\d+)" + re.escape(m["suffix"] or "") + "$")
    found = [(int(p.group(1)), f) for f in path.parent.glob("*") if (p := pattern.match(f.name))]
    return [f for _, f in sorted(found)]


@st.cache_data(ttl=10, show_spinner="Reading the other ranks ...", max_entries=8)
def read_ranks(source: Source, stamp: float, records_dir: str) -> list[History]:
    """One History per rank of the source's run (the source's own included); [] for a single rank, or
    when any of them cannot be read (the section is optional: the page reports the source's own errors).
    Only regular files under `records_dir` are read: a sibling that is a symlink out of it is not."""
    try:
        if source.kind == "record":
            from monitor.record import read_record

            paths = [p for p in rank_records(source.record) if inside(p, Path(records_dir)) is not None]
            return [read_record(p) for p in paths] if len(paths) > 1 else []
        from monitor.sources.prometheus import read_all_ranks

        histories = read_all_ranks(source.prometheus, run=source.run, lookback=source.lookback or "7d")
        return histories if len(histories) > 1 else []
    except Exception:  # noqa: BLE001 - a damaged sibling must not break the page
        log.warning("could not read the other ranks of %s", source.describe(), exc_info=True)
        return []


def render_ranks(histories: list[History]) -> None:
    """Which rank broke first, then the cross-rank findings with their evidence (plain text)."""
    if not histories:
        return
    st.header(f"Across ranks ({len(histories)})")
    st.text("\n".join(f"• {line}" for line in rank_lines(histories)))
    findings = compare_ranks(histories)
    if not findings:
        st.caption("The ranks agree: no rank went non-finite before the others, no gradient-norm divergence.")
    for f in findings:
        box = st.error if f.severity == "critical" else st.warning
        box(escape(f"{f.code}: {f.title}"))
        if f.evidence:
            st.text("\n".join(f"  • {line}" for line in f.evidence))
