"""Altair charts over steps. Finite values draw the line; non-finite observations are dashed red rules at
their step (NaN/Inf cannot be plotted), skipped steps are red points on the loss-scale line. Long runs are
thinned to at most MAX_STEPS steps, always keeping the steps with a non-finite value or a skip.
No fixed height: Streamlit's container sizing squeezes a layered chart with a bottom legend to nothing."""

from __future__ import annotations

import altair as alt
import pandas as pd

__all__ = ["MAX_STEPS", "layer_chart", "loss_scale_chart", "step_chart", "thin"]

MAX_STEPS = 800
BAD = "#d62728"
AXIS = alt.Axis(format=",.6~g")  # 1.2e+38, 0.001, 65,536: no "1.19999999..." or "0.000000" labels
STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # steps are integers: no 1.2, 1.4 ticks


def thin(frame: pd.DataFrame, keep: pd.Series | None = None, max_steps: int = MAX_STEPS) -> pd.DataFrame:
    """Rows of at most ~`max_steps` distinct steps, evenly spaced, plus every row where `keep` is True."""
    steps = frame["step"].drop_duplicates().sort_values()
    if len(steps) <= max_steps:
        return frame
    stride = -(-len(steps) // max_steps)
    chosen = set(steps.iloc[::stride]) | set(steps.iloc[-1:])
    mask = frame["step"].isin(chosen)
    return frame[mask | keep] if keep is not None else frame[mask]


def _x() -> alt.X:
    return alt.X("step:Q", title="step", axis=STEP_AXIS)


def _scale(values: pd.Series, log: bool, base: int = 10) -> alt.Scale:
    finite = values.dropna()
    if log and len(finite) and (finite > 0).all():
        return alt.Scale(type="log", base=base)
    return alt.Scale(zero=False)


def _bad_rules(data: pd.DataFrame, color: str | None = None) -> alt.Chart:
    enc = {"x": "step:Q", "tooltip": ["step:Q"] + ([f"{color}:N"] if color else [])}
    if color:
        enc["color"] = alt.Color(f"{color}:N")
    return alt.Chart(data).mark_rule(color=BAD, strokeDash=[4, 3], opacity=0.7).encode(**enc)


def step_chart(frame: pd.DataFrame, key: str, title: str, log: bool = False) -> alt.LayerChart | None:
    """`key` of step_frame() over steps, with the non-finite steps marked; None when nothing was observed."""
    flag = f"{key}_nonfinite"
    data = thin(frame[["step", key, flag]], keep=frame[flag])
    if data[key].isna().all() and not data[flag].any():
        return None
    line = alt.Chart(data).mark_line(point=len(data) <= 60).encode(
        x=_x(), y=alt.Y(f"{key}:Q", title=title, scale=_scale(data[key], log), axis=AXIS),
        tooltip=["step:Q", alt.Tooltip(f"{key}:Q", format=".4g")])
    return alt.layer(line, _bad_rules(data[data[flag]])).properties(title=title)


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
    return alt.layer(base.mark_line(), skipped).properties(title="loss scale (red: skipped steps)")


def layer_chart(frame: pd.DataFrame, title: str, log: bool = False) -> alt.LayerChart | None:
    """layer_frame() values per layer over steps; non-finite values as dashed rules; None when empty."""
    if frame.empty:
        return None
    data = thin(frame, keep=frame["nonfinite"])
    line = alt.Chart(data).mark_line(point=data["step"].nunique() <= 60).encode(
        x=_x(), y=alt.Y("value:Q", title=title, scale=_scale(data["value"], log), axis=AXIS),
        color=alt.Color("layer:N", legend=alt.Legend(orient="bottom", columns=2, labelLimit=240)),
        tooltip=["step:Q", "layer:N", alt.Tooltip("value:Q", format=".4g")])
    return alt.layer(line, _bad_rules(data[data["nonfinite"]], color="layer")).properties(title=title)
