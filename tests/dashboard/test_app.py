"""The triage page driven by Streamlit's AppTest on real run records: findings, fixes, snippets, charts,
events; a healthy run; and every kind of bad input shown as an error, never a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from monitor.diagnosis import run_rules
from monitor.record import read_record
from tests.realservers import free_port

from .runs import EPS_RUN, HEALTHY_RUN, plain


def texts(elements) -> list[str]:
    """The shown text of each element (Markdown escapes undone)."""
    return [plain(e.value) for e in elements]


def finding_labels(at) -> list[str]:
    return [plain(e.label) for e in at.expander[:-1]]  # the last one holds the layers table


def test_eps_underflow_record_shows_finding_fixes_and_snippets(app_page, records) -> None:
    expected = run_rules(read_record(records["eps"]))
    at = app_page(query={"record": str(records["eps"])})
    assert not at.success and len(at.error) == 1
    assert at.error[0].value.startswith("2 critical") and "training is broken" in at.error[0].value
    labels = finding_labels(at)
    assert len(labels) == len(expected) and "AdamW: parameters became non-finite" in labels[0]
    assert [e.proto.expanded for e in at.expander] == [True] + [False] * len(expected)
    assert at.expander[-1].label == "Layers: dtypes and optimizer state (4)"
    body = "\n".join(texts(at.markdown))
    assert "adam_eps_underflow · first seen at step 1" in body
    shown = "\n".join(texts(at.text))
    assert "Layers: blocks.0, blocks.2" in shown
    top = expected[0]
    assert top.code == "adam_eps_underflow"
    for line in top.evidence:
        assert f"• {line}" in shown
    snippets = [(c.value, c.language) for c in at.code]
    want = [(fix.snippet, "python") for f in expected for fix in f.fixes if fix.snippet]
    assert snippets == want
    assert "eps=0.0001" in snippets[2][0] and "1. **dtype** —" in body and "3. **eps** —" in body
    assert "4. **amsgrad** —" in body


def test_eps_underflow_record_header_charts_and_events(app_page, records) -> None:
    at = app_page(query={"record": str(records["eps"])})
    body = "\n".join(texts(at.markdown))
    assert f"**run / rank:** {EPS_RUN} / 0" in body
    assert "**optimizer:** AdamW: lr 0.001, eps 1e-08" in body
    assert "**parameter dtypes:** float16 x2, float32 x2" in body and "**loss scaling:** none" in body
    assert "**optimizer state dtypes:** float16 x2, float32 x2" in body
    assert [m.value for m in at.metric][:2] == ["6", "6"]
    charts = [str(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(charts) == 6  # loss, grad norm (no loss-scale panel: no loss scaling), 3 per-layer + 1 chosen
    assert not any("loss scale" in c for c in charts)
    assert at.multiselect(key="layers").value[:2] == ["blocks.0", "blocks.2"]
    shown = "\n".join(texts(at.text))
    assert "• First non-finite param at step 1 in blocks.0" in shown
    assert "• Localised (forward): first module with a non-finite output at step 3 in input_layer" in shown
    events, layers = at.dataframe[0].value, at.dataframe[1].value
    assert list(events.columns) == ["step", "kind", "tensor", "layer", "detail"]
    assert ("nonfinite", "param", "blocks.0") in set(zip(events["kind"], events["tensor"], events["layer"]))
    assert dict(zip(layers["layer"], layers["optimizer state"])) == {
        "input_layer": "float32", "blocks.0": "float16", "blocks.2": "float16", "out_layer": "float32"}


def test_chart_quantity_can_be_changed(app_page, records) -> None:
    at = app_page(query={"record": str(records["eps"])})
    at.selectbox(key="layer_field").select("state_zero_ratio").run()
    assert not at.exception
    assert any("Adam exp_avg_sq zero share" in str(c.proto.spec) for c in at.get("vega_lite_chart"))


def test_healthy_record_says_so(app_page, records) -> None:
    at = app_page(query={"record": str(records["healthy"])})
    assert texts(at.success) == ["Healthy: no findings over 6 observed steps (last step 6)."]
    assert not at.error and not at.warning and not at.code
    assert "Nothing to fix: no rule fired on this run." in texts(at.markdown)
    assert f"**run / rank:** {HEALTHY_RUN} / 0" in "\n".join(texts(at.markdown))
    assert len(at.get("vega_lite_chart")) == 6 and len(at.expander) == 1  # only the layers table


def test_preflight_only_record(app_page, records) -> None:
    at = app_page(query={"record": str(records["preflight"])})
    assert at.error[0].value.startswith("1 critical, 1 warning findings over 0 observed steps (last step 0): "
                                        "this set-up will break training (predicted before step 1)")
    assert "AdamW eps 1e-08 rounds to 0 in float16 optimizer state" in finding_labels(at)[0]
    body = "\n".join(texts(at.markdown))
    assert "adam_eps_underflow · pre-flight: predicted from the set-up, before step 1" in body
    assert "**optimizer state dtypes:** none yet x4" in body  # Adam makes its state at the first step
    assert {"loss: not observed", "grad norm: not observed"} <= set(texts(at.caption))


def test_loss_scale_collapse_record(app_page, records) -> None:
    at = app_page(query={"record": str(records["scaler"])})
    # the warning: loss_spike, the loss multiplied by 1e38 from step 10
    status = at.error[0].value
    assert status.startswith("1 critical, 1 warning findings over 40 observed steps") and "training is broken" in status
    assert "Loss scale collapsing" in finding_labels(at)[0]
    body = "\n".join(texts(at.markdown))
    assert "loss_scale_collapse · first seen at step 10" in body
    assert "**loss scaling:** GradScaler (last scale 2, 15 skipped steps)" in body
    assert [m.value for m in at.metric][2] == "15"
    assert any("loss scale (red: skipped steps)" in c.proto.spec for c in at.get("vega_lite_chart"))


def test_source_from_environment_and_link_mismatch(app_page, records) -> None:
    at = app_page(query={"run": "other-run", "rank": "3"}, env={"SLATMON_RECORD": str(records["healthy"])})
    assert at.text_input(key="record").value == str(records["healthy"])
    assert texts(at.warning) == [
        f"the link asks for run 'other-run', but this record holds run '{HEALTHY_RUN}'",
        "the link asks for rank 3, but this record holds rank 0"]


def test_sidebar_switches_source(app_page, records) -> None:
    at = app_page(query={"record": str(records["healthy"])})
    at.text_input(key="record").input(str(records["eps"])).run()
    assert at.error[0].value.startswith("2 critical") and len(at.code) > 0


def test_no_source_asks_for_one(app_page, tmp_path_factory) -> None:
    at = app_page()
    assert texts(at.info) == [f"Choose a source in the sidebar: the path of a run record under "
                              f"{tmp_path_factory.getbasetemp()} (monitor.watch(..., record=PATH)), or start the "
                              "page with slat-monitor triage --prometheus URL."]
    assert not at.error and not at.expander
    at = app_page(query={"run": "slat-vae-01", "rank": "1"})  # an alert link, page started without a source
    assert at.radio(key="kind").value == "prometheus"
    assert texts(at.info) == ["This link asks for run 'slat-vae-01' rank 1, but this page was started without a "
                              "Prometheus: start it with slat-monitor triage --prometheus URL (the Prometheus that "
                              "scrapes the run)."]


def test_bad_inputs_are_clear_errors(app_page, tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    other_db = tmp_path / "other.sqlite"
    sqlite3.connect(other_db).execute("CREATE TABLE t (x)").connection.close()
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        ({"record": str(missing)}, {}, f"no run record at '{missing}'"),
        ({"record": str(text)}, {}, f"'{text}' is not a slat-monitor run record"),
        ({"record": str(other_db)}, {}, f"'{other_db}' is not a slat-monitor run record (no slatmon_meta table)"),
        ({}, {"SLATMON_PROMETHEUS": dead}, f"cannot reach Prometheus at {dead}"),
        ({}, {"SLATMON_PROMETHEUS": "127.0.0.1:9090"}, "'127.0.0.1:9090' is not a Prometheus URL"),
        ({"record": str(missing), "rank": "zero"}, {}, "rank must be an integer (the `rank` label), got 'zero'"),
    ]
    for query, env, message in cases:
        at = app_page(query=query, env=env)
        assert len(at.error) == 1 and texts(at.error)[0].startswith(message), (query, texts(at.error))
        assert not at.expander and not at.code and not at.success
