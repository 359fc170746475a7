"""The committed ops artifacts are exactly what the code generates, and the two alert renderings agree."""

from __future__ import annotations

import yaml

from monitor.ops import generate, render_grafana, render_prometheus
from monitor.ops.alerts import ALERTS, DEFAULT_DOCS_URL
from monitor.ops.ids import DASHBOARD_UID, DATASOURCE_UID, FOLDER_UID

ROOT = generate.REPO_ROOT


def test_committed_files_match_the_generators() -> None:
    stale = generate.stale_files()
    assert not stale, f"regenerate with `python -m monitor.ops.generate`: {stale}"


def test_check_detects_a_hand_edit(tmp_path) -> None:
    generate.write_all(tmp_path)
    assert generate.stale_files(tmp_path) == []
    path = tmp_path / "prometheus/rules/slatmon-alerts.yml"
    path.write_text(path.read_text().replace("for: 1m", "for: 5m", 1))
    assert generate.stale_files(tmp_path) == ["prometheus/rules/slatmon-alerts.yml"]


def test_prometheus_and_grafana_rules_come_from_the_same_definitions() -> None:
    prom = {r["alert"]: r for r in render_prometheus.alert_rules()["groups"][0]["rules"]}
    graf = {r["title"]: r for r in render_grafana.provisioning_file()["groups"][0]["rules"]}
    assert set(prom) == set(graf) == {a.name for a in ALERTS}
    for name, rule in prom.items():
        g = graf[name]
        assert g["data"][0]["model"]["expr"] == rule["expr"]
        assert g["data"][0]["datasourceUid"] == DATASOURCE_UID
        assert g["for"] == rule["for"] and g["labels"] == rule["labels"]
        assert g["condition"] == "C" and g["data"][1]["model"]["expression"] == render_grafana.CONDITION
        assert set(g["annotations"]) == set(rule["annotations"]) == {"summary", "description", "triage_url",
                                                                      "dashboard_url", "runbook_url"}
        assert g["annotations"]["runbook_url"].startswith(DEFAULT_DOCS_URL + "/runbooks.md#")
        assert rule["annotations"]["runbook_url"].startswith("{{ $externalLabels.docs_url }}/runbooks.md#")
        assert "{{ $labels.run }}" in rule["annotations"]["summary"]
        assert "{{ $labels.rank }}" in rule["annotations"]["summary"]
        assert "{" + "triage" not in str(g) + str(rule) and "{" + "docs}" not in str(g) + str(rule), "unfilled"


def test_no_alert_is_per_layer() -> None:
    """One alert per run, rank and cause: per-layer series are summed away (one NaN spread over 39 layers
    of the #162 demo fired 39 alerts before)."""
    for a in ALERTS:
        assert "$labels.layer" not in a.summary + a.description, a.name
        if "slatmon_nonfinite_elements" in a.expr:
            assert a.expr.count("sum by (run, rank, tensor) (slatmon_nonfinite_elements") == 2, a.name


def test_every_runbook_anchor_exists() -> None:
    text = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")}
    for a in ALERTS:
        assert (a.runbook or a.name.lower()) in anchors or a.runbook == "{{ $labels.code }}", a.name
    from monitor.diagnosis.engine import RULES

    codes = {name for name, _ in RULES} | {"nonfinite_rank_first", "grad_norm_rank_divergence", "nonfinite_values"}
    assert codes <= anchors, codes - anchors


def test_grafana_api_rules_override_datasource_and_triage_url() -> None:
    rules = render_grafana.api_rules(datasource_uid="their-prom", triage_url="https://triage.example/")
    assert {r["folderUID"] for r in rules} == {FOLDER_UID}
    assert all(r["data"][0]["datasourceUid"] == "their-prom" for r in rules)
    assert all(r["annotations"]["triage_url"].startswith("https://triage.example/?run=") for r in rules)


def test_provisioning_files_reference_the_fixed_uids() -> None:
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/slatmon-prometheus.yaml").read_text())
    assert datasources["datasources"][0]["uid"] == DATASOURCE_UID
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/slatmon.yaml").read_text())
    assert providers["providers"][0]["folderUid"] == FOLDER_UID
    assert (ROOT / f"grafana/provisioning/dashboards/{DASHBOARD_UID}.json").is_file()
