"""`slat-monitor grafana push` against a PROTOCOL FAKE of Grafana's HTTP API (tests/ops/fake_grafana.py).

Verified here: the requests grafana-client sends for us (method, path, JSON body, Bearer token, the
provenance header), idempotence (a second push overwrites by UID and changes nothing), error handling.
NOT verified (no Grafana can run here): that a real Grafana accepts and renders these objects.
"""

from __future__ import annotations

import copy
import json

import pytest

from monitor.cli import main
from monitor.ops.alerts import ALERTS
from monitor.ops.generate import REPO_ROOT
from monitor.ops.ids import DASHBOARD_UID, DATASOURCE_UID, FOLDER_UID
from tests.ops.fake_grafana import FakeGrafana
from tests.realservers import free_port

TOKEN = "glsa_test_token"


@pytest.fixture
def grafana():
    fake = FakeGrafana(TOKEN)
    yield fake
    fake.close()


def push(url: str, *extra: str) -> int:
    return main(["grafana", "push", "--url", url, *extra])


def test_push_uploads_everything_with_the_token_and_is_idempotent(grafana, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push(grafana.url, "--prometheus-url", "http://127.0.0.1:9090") == 0
    state = copy.deepcopy(grafana.state)
    assert set(state.folders) == {FOLDER_UID}
    assert set(state.dashboards) == {DASHBOARD_UID}
    assert set(state.rules) == {a.uid for a in ALERTS}
    assert state.groups == {(FOLDER_UID, "slatmon"): 10}
    assert state.datasources[DATASOURCE_UID]["url"] == "http://127.0.0.1:9090"
    assert all(r.authorization == f"Bearer {TOKEN}" for r in grafana.requests)
    first = len(grafana.requests)

    assert push(grafana.url, "--prometheus-url", "http://127.0.0.1:9090") == 0
    assert grafana.state == state, "a second push must change nothing"
    second = grafana.requests[first:]
    assert not [r for r in second if r.method == "POST" and r.path != "/api/dashboards/db"], \
        "second push creates nothing: existing objects are updated by UID"
    assert {r.path for r in second if r.method == "PUT"} >= {f"/api/v1/provisioning/alert-rules/{a.uid}"
                                                             for a in ALERTS}
    saves = [r.body for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert all(b["overwrite"] is True and b["folderUid"] == FOLDER_UID for b in saves)
    assert "rule group slatmon: interval 10s" in capsys.readouterr().out


def test_pushed_objects_are_the_committed_ones(grafana, monkeypatch) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push(grafana.url) == 0
    committed = json.loads((REPO_ROOT / f"grafana/provisioning/dashboards/{DASHBOARD_UID}.json").read_text())
    assert grafana.state.dashboards[DASHBOARD_UID] == {**committed, "id": None}
    import yaml

    provisioned = yaml.safe_load((REPO_ROOT / "grafana/provisioning/alerting/slatmon-alerts.yaml").read_text())
    for rule in provisioned["groups"][0]["rules"]:
        sent = grafana.state.rules[rule["uid"]]
        assert {k: v for k, v in sent.items() if k not in ("folderUID", "ruleGroup", "orgID")} == rule
    assert not grafana.state.datasources, "no datasource is touched without --prometheus-url"
    assert all(r.disable_provenance is None for r in grafana.requests)


def test_datasource_uid_and_triage_url_overrides(grafana, monkeypatch) -> None:
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    assert push(grafana.url, "--token-env", "MY_TOKEN", "--datasource-uid", "their-prom",
                "--triage-url", "https://triage.example", "--editable") == 0
    board = grafana.state.dashboards[DASHBOARD_UID]
    assert {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])} == {"their-prom"}
    for rule in grafana.state.rules.values():
        assert rule["data"][0]["datasourceUid"] == "their-prom"
        assert rule["annotations"]["triage_url"].startswith("https://triage.example/?run=")
    assert {r.disable_provenance for r in grafana.requests if "/provisioning/" in r.path
            and r.method != "GET"} == {"true"}


def test_missing_token_is_a_clear_error_and_sends_nothing(grafana, monkeypatch, capsys) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert push(grafana.url) == 2
    assert "set GRAFANA_TOKEN" in capsys.readouterr().err
    assert grafana.requests == []


def test_rejected_token_and_unreachable_grafana(grafana, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    assert push(grafana.url) == 1
    assert "rejected the token in GRAFANA_TOKEN (401)" in capsys.readouterr().err
    assert grafana.state.dashboards == {}
    assert push(f"http://127.0.0.1:{free_port()}") == 1
    assert "no response" in capsys.readouterr().err
