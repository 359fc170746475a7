"""Altair charts over steps. Finite values draw the line; steps with a non-finite value are a shaded red
band (one per stretch of consecutive bad steps, not a rule per step), and a non-finite value of a
one-series chart (the loss) is also a red marker along the top edge saying NaN / +Inf / -Inf, so a
run whose loss is NaN throughout still shows every step. Skipped steps are red points on the
loss-scale line. Legends sit inside the plot. Long runs are thinned to at most MAX_STEPS steps, always
keeping the steps with a non-finite value or a skip.

Layer names only ever reach the charts as data values (legend labels, tooltips), never as field names
or expressions; Vega draws them as text and its tooltip escapes HTML."""

from __future__ import annotations

import altair as alt
import pandas as pd

__all__ = ["MAX_STEPS", "bands", "layer_chart", "loss_scale_chart", "step_chart", "thin"]

MAX_STEPS = 800
MAX_BAND_LAYERS = 6  # layers named in a band's tooltip
BAD = "#d62728"
HEIGHT = 260
AXIS = alt.Axis(format=",.6~g")  # 1.2e+38, 0.001, 65,536: no "1.19999999..." or "0.000000" labels
STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # steps are integers: no 1.2, 1.4 ticks
STEP_SCALE = alt.Scale(zero=False, nice=False)  # the observed steps (and half a step around a band), not from 0
LEGEND = alt.Legend(orient="top-left", title=None, fillColor="#ffffffd9", padding=4, labelLimit=200,
                    symbolType="stroke", labelFontSize=10, rowPadding=1)


def thin(frame: pd.DataFrame, keep: pd.Series | None = None, max_steps: int = MAX_STEPS) -> pd.DataFrame:
    """Rows of at most ~`max_steps` distinct steps, evenly spaced, plus every row where `keep` is True."""
    steps = frame["step"].drop_duplicates().sort_values()
    if len(steps) <= max_steps:
        return frame
    stride = -(-len(steps) // max_steps)
    chosen = set(steps.iloc[::stride]) | set(steps.iloc[-1:])
    mask = frame["step"].isin(chosen)
    return frame[mask | keep] if keep is not None else frame[mask]


def bands(steps: pd.Series, observed: pd.Series, names: pd.Series | None = None) -> pd.DataFrame:
    """Stretches of non-finite steps: start, end (the x range, half a step either side), first, last and
    `what` (the tooltip). A stretch is broken by an observed step that was finite; `names` (e.g. the
    layer of each bad row) are listed in the tooltip. `steps`: the bad rows' steps; `observed`: every
    step of the chart."""
    bad = sorted(set(steps))
    seen = sorted(set(observed))
    rows, start = [], None
    for i, step in enumerate(bad):
        start = step if start is None else start
        nxt = bad[i + 1] if i + 1 < len(bad) else None
        if nxt is not None and not any(step < s < nxt for s in seen):
            continue
        what = f"non-finite at steps {start}-{step}" if step > start else f"non-finite at step {start}"
        if names is not None:
            inside = sorted(set(names[(steps >= start) & (steps <= step)]))
            more = f" (+{len(inside) - MAX_BAND_LAYERS} more)" if len(inside) > MAX_BAND_LAYERS else ""
            what += ": " + ", ".join(inside[:MAX_BAND_LAYERS]) + more
        rows.append({"start": start - 0.5, "end": step + 0.5, "first": start, "last": step, "what": what})
        start = None
    return pd.DataFrame(rows, columns=["start", "end", "first", "last", "what"])


def _x() -> alt.X:
    return alt.X("step:Q", title="step", axis=STEP_AXIS, scale=STEP_SCALE)


def _scale(values: pd.Series, log: bool, base: int = 10) -> alt.Scale:
    finite = values.dropna()
    if log and len(finite) and (finite > 0).all():
        return alt.Scale(type="log", base=base)
    return alt.Scale(zero=False)


def _band_layer(data: pd.DataFrame) -> alt.Chart:
    return alt.Chart(data).mark_rect(color=BAD, opacity=0.14).encode(
        x=alt.X("start:Q", title="step"), x2="end:Q", tooltip=[alt.Tooltip("what:N", title="NaN/Inf")])


def step_chart(frame: pd.DataFrame, key: str, title: str, log: bool = False) -> alt.LayerChart | None:
    """`key` of step_frame() over steps, non-finite steps as bands and top-edge markers; None when nothing
    was observed."""
    flag, text = f"{key}_nonfinite", f"{key}_text"
    data = thin(frame[["step", key, flag, text]], keep=frame[flag])
    if data[key].isna().all() and not data[flag].any():
        return None
    bad = data[data[flag]]
    line = alt.Chart(data).mark_line(point=len(data) <= 60).encode(
        x=_x(), y=alt.Y(f"{key}:Q", title=title, scale=_scale(data[key], log), axis=AXIS),
        tooltip=["step:Q", alt.Tooltip(f"{key}:Q", format=".4g")])
    markers = alt.Chart(bad).mark_point(shape="triangle-down", filled=True, color=BAD, size=70).encode(
        x=alt.X("step:Q", title="step"), y=alt.value(7), tooltip=["step:Q", alt.Tooltip(f"{text}:N", title=title)])
    layers = [_band_layer(bands(bad["step"], data["step"])), line, markers]
    if bad.empty:
        layers = [line]
    return alt.layer(*layers).properties(title=f"{title} (red: NaN/Inf)" if not bad.empty else title,
                                         height=HEIGHT)


def loss_scale_chart(frame: pd.DataFrame) -> alt.LayerChart | None:
    """Loss scale over steps (log2 axis) with skipped steps as red points; None without a loss scale."""
    data = thin(frame[["step", "loss_scale", "skipped", "skipped_total"]], keep=frame["skipped"])
    if data["loss_scale"].isna().all():
        return None
    base = alt.Chart(data).encode(
        x=_x(),
        y=alt.Y("loss_scale:Q", title="loss scale", scale=_scale(data["loss_scale"], True, base=2), axis=AXIS),
        tooltip=["step:Q", alt.Tooltip("loss_scale:Q", format=".4g"), "skipped:N", "skipped_total:Q"])
    skipped = base.transform_filter("datum.skipped").mark_point(color=BAD, filled=True, size=40)
    return alt.layer(base.mark_line(), skipped).properties(title="loss scale (red: skipped steps)", height=HEIGHT)


def layer_chart(frame: pd.DataFrame, title: str, log: bool = False) -> alt.LayerChart | None:
    """layer_frame() values per layer over steps (legend inside the plot); the steps where any of the
    layers was non-finite as bands naming them; None when empty."""
    if frame.empty:
        return None
    data = thin(frame, keep=frame["nonfinite"])
    bad = data[data["nonfinite"]]
    line = alt.Chart(data).mark_line(point=data["step"].nunique() <= 60).encode(
        x=_x(), y=alt.Y("value:Q", title=title, scale=_scale(data["value"], log), axis=AXIS),
        color=alt.Color("layer:N", legend=LEGEND),
        tooltip=["step:Q", "layer:N", alt.Tooltip("value:Q", format=".4g")])
    layers = [line] if bad.empty else [_band_layer(bands(bad["step"], data["step"], bad["layer"])), line]
    return alt.layer(*layers).properties(title=title, height=HEIGHT)
