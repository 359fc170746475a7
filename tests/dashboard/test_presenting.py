"""Words, tables and charts from real records (no Streamlit session): summary, frames, charts, escaping."""

from __future__ import annotations

import math

import pandas as pd

from monitor.dashboard import charts, frames, summary
from monitor.dashboard.mdtext import JOINER, escape
from monitor.diagnosis import run_rules
from monitor.record import read_record

from .runs import plain


def test_escape_keeps_text_literal() -> None:
    assert escape("2**-25 < $x$ | a_b `c` [l](u) #") == "2\\*\\*-25 \\< \\$x\\$ \\| a\\_b \\`c\\` \\[l\\](u) \\#"
    # Streamlit links URLs, www. and e-mail after parsing: an invisible word joiner breaks them instead
    assert escape("www.x.io http://x a@b.c :smile: &amp;\nline") == \
        f"www{JOINER}.x.io http:{JOINER}//x a{JOINER}@b.c :{JOINER}smile: \\&amp; line"
    assert escape("- item") == "\\- item" and escape("12. item") == "12\\. item"
    assert escape("AdamW: lr 0.001, eps (1e-08)") == "AdamW: lr 0.001, eps (1e-08)"  # plain prose unchanged
    text = "".join(map(chr, range(32, 127)))
    assert plain(escape(text)) == text


def test_summary_of_eps_run(records) -> None:
    h = read_record(records["eps"])
    findings = run_rules(h)
    assert summary.status(findings) == "critical"
    assert summary.status_line(h, findings).startswith("2 critical, 1 warning findings over 6 observed steps")
    facts = dict(summary.run_facts(h))
    assert facts["optimizer"] == "AdamW: lr 0.001, eps 1e-08, betas (0.9, 0.999), weight decay 0.01"
    assert facts["optimizer state dtypes"] == "float16 x2, float32 x2" and facts["loss scaling"] == "none"


def test_summary_of_healthy_run(records) -> None:
    h = read_record(records["healthy"])
    assert run_rules(h) == [] and summary.status([]) == "healthy"
    assert summary.status_line(h, []) == "Healthy: no findings over 6 observed steps (last step 6)."
    h.steps.clear()
    assert summary.status_line(h, []).startswith("No findings, but no optimizer step has been observed yet")


def test_frames_of_eps_run(records) -> None:
    h = read_record(records["eps"])
    steps = frames.step_frame(h)
    assert list(steps["step"]) == [1, 2, 3, 4, 5, 6]
    assert math.isfinite(steps["loss"][0]) and list(steps["loss_nonfinite"]) == [False] + [True] * 5
    assert frames.worst_layers(h, run_rules(h), n=3) == ["blocks.0", "blocks.2", "input_layer"]
    assert frames.worst_layers(h, (), n=2) == ["blocks.0", "blocks.2"]
    params = frames.layer_frame(h, ["blocks.0", "out_layer"], "param_nonfinite")
    step1 = params[params["step"] == 1].set_index("layer")["value"]
    assert step1["blocks.0"] > 0 and step1["out_layer"] == 0
    norms = frames.layer_frame(h, ["blocks.0"], "param_norm")
    assert norms["nonfinite"].iloc[0] and math.isnan(norms["value"].iloc[0])
    lines = frames.highlights(h)
    assert lines[0].startswith("First non-finite param at step 1 in blocks.0")
    assert sum(line.startswith("Localised (forward)") for line in lines) == 1
    assert len(frames.event_frame(h, limit=2)) == 2


def test_thin_keeps_marked_steps() -> None:
    frame = pd.DataFrame({"step": range(1, 10_001), "bad": [s in (7, 5003) for s in range(1, 10_001)]})
    thinned = charts.thin(frame, keep=frame["bad"], max_steps=100)
    assert len(thinned) <= 103 and {7, 5003, 10_000} <= set(thinned["step"])
    assert len(charts.thin(frame.head(50), keep=frame["bad"].head(50), max_steps=100)) == 50


def _layer_data(spec: dict, mark: str) -> tuple[dict, list[dict]]:
    layer = next(part for part in spec["layer"] if part["mark"]["type"] == mark)
    return layer, spec["datasets"][layer["data"]["name"]]


def test_charts_mark_nonfinite_steps_as_one_band_and_markers(records) -> None:
    h = read_record(records["eps"])  # loss finite at step 1, NaN at steps 2-6
    spec = charts.step_chart(frames.step_frame(h), "loss", "loss").to_dict()
    assert [p["mark"]["type"] for p in spec["layer"]] == ["rect", "line", "point"]  # no rule per step
    _, band = _layer_data(spec, "rect")
    assert [(b["start"], b["end"], b["what"]) for b in band] == [(1.5, 6.5, "non-finite at steps 2-6")]
    markers, rows = _layer_data(spec, "point")
    assert [(r["step"], r["loss_text"]) for r in rows] == [(s, "NaN") for s in range(2, 7)]
    assert markers["encoding"]["y"] == {"value": 7}  # along the top edge: a NaN has no height
    assert spec["title"] == "loss (red: NaN/Inf)"
    norms = charts.layer_chart(frames.layer_frame(h, ["blocks.0", "out_layer"], "param_norm"), "x").to_dict()
    _, band = _layer_data(norms, "rect")  # blocks.0 is NaN from step 1, out_layer from step 2
    assert [b["what"] for b in band] == ["non-finite at steps 1-6: blocks.0, out_layer"]
    line, _ = _layer_data(norms, "line")
    assert line["encoding"]["color"]["legend"]["orient"] == "top-left"  # the legend inside the plot
    assert charts.layer_chart(frames.layer_frame(h, [], "grad_norm"), "grad norm") is None
    assert charts.step_chart(frames.step_frame(read_record(records["healthy"])).iloc[:0], "loss", "loss") is None


def test_a_loss_nan_throughout_is_drawn_not_unobserved() -> None:
    frame = pd.DataFrame({"step": [1, 2, 3], "loss": [math.nan] * 3, "loss_nonfinite": [True] * 3,
                          "loss_text": ["NaN", "+Inf", "NaN"]})
    spec = charts.step_chart(frame, "loss", "loss").to_dict()
    _, rows = _layer_data(spec, "point")
    assert [r["loss_text"] for r in rows] == ["NaN", "+Inf", "NaN"]
    assert frames.nonfinite_text(math.inf) == "+Inf" and frames.nonfinite_text(-math.inf) == "-Inf"
    assert frames.nonfinite_text(1.0) == "" and frames.nonfinite_text(None) == ""


def test_bands_break_at_finite_steps_and_name_layers() -> None:
    bad = pd.DataFrame({"step": [2, 3, 3, 7], "layer": ["a", "a", "b", "c"]})
    got = charts.bands(bad["step"], pd.Series([1, 2, 3, 5, 7, 8]), bad["layer"])
    assert list(got["what"]) == ["non-finite at steps 2-3: a, b", "non-finite at step 7: c"]
    assert list(zip(got["start"], got["end"])) == [(1.5, 3.5), (6.5, 7.5)]
    # steps that were not observed (thinned, or not sampled) do not break a stretch
    assert list(charts.bands(pd.Series([2, 5]), pd.Series([2, 5]))["what"]) == ["non-finite at steps 2-5"]


def test_loss_scale_chart_marks_skipped_steps(records) -> None:
    steps = frames.step_frame(read_record(records["scaler"]))
    assert list(steps.loc[steps["skipped"], "step"]) == list(range(10, 25))
    spec = charts.loss_scale_chart(steps).to_dict()
    line, points = spec["layer"]
    assert points["mark"]["type"] == "point" and points["transform"] == [{"filter": "datum.skipped"}]
    assert spec["layer"][0]["encoding"]["y"]["scale"] == {"base": 2, "type": "log"}
    rows = spec["datasets"][spec["data"]["name"]]
    assert [r["step"] for r in rows if r["skipped"]] == list(range(10, 25))
