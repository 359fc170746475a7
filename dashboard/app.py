"""slat-monitor triage page (Streamlit): layout only. Run `slat-monitor triage [RECORD | --prometheus URL]`
or `streamlit run dashboard/app.py -- [RECORD] [--prometheus URL] [--run NAME] [--rank N]`.

Reading lives in dashboard/sources.py, the words/tables/charts in summary.py, frames.py, charts.py and
findings_view.py. Query parameters `?run=&rank=` (the alert links), `record=`, `prometheus=`, `source=`,
`lookback=` prefill the sidebar.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import streamlit as st

# Absolute imports: `streamlit run` executes this file as a script (no parent package); `monitor` comes from
# the installed distribution (editable or wheel), which maps dashboard/ to monitor.dashboard.
from monitor.dashboard import charts, frames
from monitor.dashboard.access import Limits, admit, allowed_hosts, host_problem, limits
from monitor.dashboard.cache import cached_layer_frame, cached_load, cached_runs, cached_worst, clear_all, stamp_of
from monitor.dashboard.findings_view import render_findings
from monitor.dashboard.mdtext import escape
from monitor.dashboard.ranks import read_ranks, render_ranks
from monitor.dashboard.sources import Loaded, Source, SourceProblem, defaults, parse_rank, worst_first
from monitor.dashboard.summary import run_facts, status, status_line

log = logging.getLogger("dashboard")
KIND_LABELS = {"record": "Run record (SQLite)", "prometheus": "Prometheus"}
BANNERS = {"critical": st.error, "warning": st.warning, "info": st.info, "healthy": st.success}


def _pick_run(initial: Source, url: str, lookback: str) -> tuple[str | None, int | None]:
    """Run and rank: drop-downs of what Prometheus holds (plus the linked ones), each with its status,
    the worst preselected unless a link names one; text fields when Prometheus cannot say."""
    statuses = cached_runs(url, lookback)
    order = worst_first(statuses)
    names = list(dict.fromkeys([r for r, _ in order] + ([initial.run] if initial.run else [])))
    if not names:
        run = st.sidebar.text_input("Run", value=initial.run or "", key="run_text") or None
        return run, parse_rank(st.sidebar.text_input("Rank", value=str(initial.rank or ""), key="rank_text"))
    run_status: dict[str, str] = {}
    for key in order:  # worst first: a run's status is its worst rank's
        run_status.setdefault(key[0], statuses[key])
    if len(names) > 1:
        listed = ", ".join(f"{n} ({run_status.get(n, 'not reporting')})" for n in names)
        st.sidebar.caption(escape(f"{len(names)} runs in Prometheus, worst first: {listed}"))
    run = st.sidebar.selectbox("Run", names, index=names.index(initial.run) if initial.run in names else 0,
                               format_func=lambda n: f"{n} - {run_status.get(n, 'not reporting')}", key="run_pick")
    ranks = [k for r, k in order if r == run]
    if run == initial.run and initial.rank is not None and initial.rank not in ranks:
        ranks.append(initial.rank)
    if not ranks:
        return run, None
    rank = st.sidebar.selectbox("Rank", ranks, index=ranks.index(initial.rank) if initial.rank in ranks else 0,
                                format_func=lambda k: f"{k} - {statuses.get((run, k), 'not reporting')}",
                                key="rank_pick")
    return run, rank


def sidebar(initial: Source, lim: Limits) -> Source:
    """The source controls, prefilled from `initial`; returns what is selected now. The Prometheus URL is
    the one the page was started with: shown, not editable."""
    st.sidebar.header("Source")
    kinds = list(KIND_LABELS)
    # A bare alert link (?run=&rank=, no source configured) names a run that lives in Prometheus.
    start = initial.kind or ("prometheus" if initial.run else "record")
    kind = st.sidebar.radio("Read from", kinds, index=kinds.index(start), format_func=KIND_LABELS.get, key="kind")
    if kind == "record":
        record = st.sidebar.text_input("Run record path", value=initial.record, key="record",
                                       placeholder="RUN.sqlite", help=escape(f"a run record under {lim.records_dir}"))
        chosen = replace(initial, kind="record", record=record.strip())
    else:
        st.sidebar.text_input("Prometheus URL", value=lim.prometheus or "none: start with --prometheus URL",
                              key="prometheus", disabled=True, help="fixed when the page was started")
        lookback = st.sidebar.text_input("Lookback", value=initial.lookback, key="lookback").strip() or "7d"
        run, rank = _pick_run(initial, lim.prometheus, lookback) if lim.prometheus else (initial.run, initial.rank)
        chosen = replace(initial, kind="prometheus", prometheus=lim.prometheus, lookback=lookback, run=run,
                         rank=rank)
    if st.sidebar.button("Reload", help="read the source again (it is cached for 10 s)"):
        clear_all()
    return chosen


def header(loaded: Loaded) -> None:
    """Status banner, headline numbers and the run's set-up."""
    history, findings = loaded.history, loaded.findings
    st.caption(f"Source: {escape(loaded.source.describe())}")
    BANNERS[status(findings)](status_line(history, findings))  # counts and steps only: no data
    for note in loaded.notes:
        st.warning(escape(note))
    cols = st.columns(4)
    cols[0].metric("steps observed", len(history.steps))
    cols[1].metric("last step", history.last_step)
    cols[2].metric("skipped steps", history.steps[-1].skipped_total if history.steps else 0)
    cols[3].metric("findings", len(findings))
    facts = run_facts(history)
    half = (len(facts) + 1) // 2
    for col, part in zip(st.columns(2), (facts[:half], facts[half:])):
        col.markdown("  \n".join(f"**{label}:** {escape(value)}" for label, value in part))


def _show(chart: object, what: str) -> None:
    if chart is None:
        st.caption(f"{what}: not observed")
    else:
        st.altair_chart(chart, width="stretch")


def step_charts(loaded: Loaded, stamp: float) -> None:
    """Loss, global grad norm, loss scale + skipped steps, then the worst layers."""
    history, source = loaded.history, loaded.source
    frame = frames.step_frame(history)
    st.header("Over steps")
    scaled = history.run.scaler in ("grad_scaler", "custom")  # no loss-scale panel without loss scaling
    cols = st.columns(3 if scaled else 2)
    with cols[0]:
        _show(charts.step_chart(frame, "loss", "loss"), "loss")
    with cols[1]:
        _show(charts.step_chart(frame, "grad_norm_total", "global grad norm", log=True), "global grad norm")
    if scaled:
        with cols[2]:
            _show(charts.loss_scale_chart(frame), "loss scale")
    names = sorted({r.layer for r in history.layers} | set(history.run.layers))
    worst = cached_worst(source, stamp, loaded)
    st.subheader("Worst layers")
    picked = st.multiselect("Layers", names, default=worst, key="layers",
                            help="preselected: the layers the findings name, then those that went non-finite first")
    cols = st.columns(3)
    for col, field, log in zip(cols, ("param_nonfinite", "grad_nonfinite", "grad_norm"), (False, False, True)):
        with col:
            title = frames.LAYER_FIELDS[field]
            data = cached_layer_frame(source, stamp, tuple(picked), field, loaded)
            _show(charts.layer_chart(data, title, log=log), title)
    field = st.selectbox("Another per-layer quantity", list(frames.LAYER_FIELDS), format_func=frames.LAYER_FIELDS.get,
                         index=list(frames.LAYER_FIELDS).index("update_ratio"), key="layer_field")
    title = frames.LAYER_FIELDS[field]
    data = cached_layer_frame(source, stamp, tuple(picked), field, loaded)
    _show(charts.layer_chart(data, title, log=field != "zero_grad_ratio"), title)


def events(loaded: Loaded) -> None:
    """The first non-finite values and localised modules, then the event table."""
    st.header("Events")
    lines = frames.highlights(loaded.history)
    if lines:
        st.text("\n".join(f"• {line}" for line in lines))
    table = frames.event_frame(loaded.history)
    if table.empty:
        st.caption("No events: no non-finite value was seen and no module was localised.")
        return
    if len(loaded.history.events) > len(table):
        st.caption(f"first {len(table)} of {len(loaded.history.events)} events")
    st.dataframe(table, hide_index=True, width="stretch")


def layers(loaded: Loaded) -> None:
    """Every layer's dtype and optimizer state, folded (last: the findings come first)."""
    history = loaded.history
    if history.run.layers:
        with st.expander(f"Layers: dtypes and optimizer state ({len(history.run.layers)})"):
            st.dataframe(frames.layer_table(history), hide_index=True, width="stretch")


def ask_for_source(source: Source, lim: Limits) -> None:
    """The page's first screen when no source is set (an alert link names its run)."""
    if source.run:
        wanted = f"run {source.run!r}" + (f" rank {source.rank}" if source.rank is not None else "")
        st.info(escape(f"This link asks for {wanted}, but this page was started without a Prometheus: start "
                       "it with slat-monitor triage --prometheus URL (the Prometheus that scrapes the run)."))
    else:
        st.info(escape(f"Choose a source in the sidebar: the path of a run record under {lim.records_dir} "
                       "(monitor.watch(..., record=PATH)), or start the page with slat-monitor triage "
                       "--prometheus URL."))


def refuse_foreign_host() -> None:
    """Stop with a message, before anything is read, when the page was opened by a Host name it does not
    answer to (DNS rebinding). `slat-monitor triage` also has Streamlit refuse such a WebSocket."""
    configured = st.get_option("server.allowedHosts") or ()
    problem = host_problem(st.context.headers, allowed_hosts(configured, st.get_option("server.address")))
    if problem:
        st.error(escape(problem))
        st.stop()


def page() -> None:
    refuse_foreign_host()
    argv = sys.argv[1:] if Path(sys.argv[0]).name == "app.py" else []  # under `streamlit run app.py -- ARGS`
    lim = limits(argv, os.environ)
    try:
        initial = admit(defaults(st.query_params.to_dict(), argv, os.environ), lim)
        source = admit(sidebar(initial, lim), lim)
    except SourceProblem as exc:
        for line in str(exc).splitlines():  # one box per reason
            st.error(escape(line))
        st.stop()
    if not (source.record if source.kind == "record" else source.prometheus):
        ask_for_source(source, lim)
        st.stop()
    stamp = stamp_of(source)
    try:
        loaded = cached_load(source, stamp)
    except SourceProblem as exc:
        st.error(escape(str(exc)))
        st.stop()
    header(loaded)
    render_ranks(read_ranks(loaded.source, stamp, str(lim.records_dir)))
    st.header("Findings")
    if loaded.findings:
        render_findings(loaded.findings)
    else:
        st.markdown("Nothing to fix: no rule fired on this run.")
    try:
        step_charts(loaded, stamp)
    except Exception as exc:  # a chart must never hide the findings above
        log.exception("charts failed")
        st.warning(escape(f"charts unavailable: {type(exc).__name__}: {exc}"))
    events(loaded)
    layers(loaded)


def main() -> None:
    st.set_page_config(page_title="slat-monitor triage", page_icon="🩺", layout="wide")
    st.title("slat-monitor triage")
    try:
        page()
    except Exception as exc:  # one message, never a traceback (st.stop() is no Exception: it passes)
        log.exception("triage page failed")
        st.error(escape(f"the page failed: {type(exc).__name__}: {exc} (the details are in the server's log)"))


main()
