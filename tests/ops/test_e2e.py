"""End to end: real watched trainer_example runs -> real Prometheus -> real Alertmanager -> webhook.

One fault run (`--fault eps-underflow`: fp16 params non-finite after step 1) and one healthy run
(`--fault none`) train side by side; see tests/ops/e2e_run.py for the set-up. Every alert expression
and every dashboard panel query is evaluated against what Prometheus scraped.
"""

from __future__ import annotations

import re

import pytest

from grafana.main import build_dashboards
from monitor.ops.alerts import ALERTS, RECORDING
from monitor.ops.ids import DASHBOARD_UID
from monitor.record import read_record
from tests.ops.e2e_run import E2E, run_e2e

pytestmark = pytest.mark.slow
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval is at a 1 s scrape interval, rounded up
# Panel queries that may legitimately be empty for both runs, with the reason (none so far: the fault
# run's diagnosis reports adam_eps_underflow, so even "Active findings" has data).
MAY_BE_EMPTY: dict[str, str] = {}


@pytest.fixture(scope="module")
def e2e(module_servers, module_webhook_receiver, tmp_path_factory) -> E2E:
    result = run_e2e(module_servers, module_webhook_receiver, tmp_path_factory.mktemp("e2e"))
    logs = {k: p.read_text(errors="replace")[-2000:] for k, p in result.logs.items()}
    assert result.exit_codes == {"fault": 0, "healthy": 0}, logs
    assert result.at is not None, f"runs not scraped often enough; logs: {logs}"
    return result


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bslatmon_[a-z_]+\b", expr))


def runs_in(result: list[dict]) -> set[str]:
    return {r["metric"].get("run", "") for r in result}


def test_nonfinite_alert_fires_and_is_delivered_through_alertmanager(e2e: E2E) -> None:
    fault = e2e.names["fault"]
    assert e2e.firing is not None, "SlatmonNonFiniteValues never reached firing in Prometheus"
    assert e2e.firing["labels"]["severity"] == "critical"
    assert e2e.delivery is not None, "no webhook notification from Alertmanager"
    alert = next(a for a in e2e.delivery.body["alerts"] if a["labels"]["alertname"] == "SlatmonNonFiniteValues")
    labels, notes = alert["labels"], alert["annotations"]
    assert labels["run"] == fault and labels["tensor"] in ("param", "grad")
    assert "layer" not in labels, "one alert per run, rank and tensor - not one per layer"
    assert f"run {fault} rank" in notes["summary"]
    assert notes["triage_url"] == notes["dashboard_url"] == f"http://triage.test/?run={fault}&rank={labels['rank']}"
    assert notes["runbook_url"].endswith("/runbooks.md#slatmonnonfinitevalues")
    history = read_record(str(e2e.records["fault"]))
    first = next(s for s in history.steps if (s.param_nonfinite or 0) > 0 or (s.grad_nonfinite or 0) > 0)
    latency = e2e.delivery.received - first.time
    print(f"\nnon-finite at step {first.step}; Prometheus firing seen {e2e.firing_seen - first.time:.2f} s "
          f"later; webhook delivery {latency:.2f} s after the step (1 s scrape and evaluation intervals)")
    assert latency > 0


def test_healthy_run_fires_nothing(e2e: E2E) -> None:
    healthy = e2e.names["healthy"]
    assert float(e2e.prom.query(f'max_over_time(slatmon_step{{run="{healthy}"}}[15m])')[0]["value"][1]) >= 10
    assert e2e.prom.query(f'max_over_time(ALERTS{{run="{healthy}", alertstate="firing"}}[15m])') == []
    # Pending is allowed only for SlatmonTargetDown (for: 1m) in the few seconds between a clean exit and
    # Prometheus applying the removal of the run's target file (its discovery updates every 5 s).
    pending = e2e.prom.query(f'max_over_time(ALERTS{{run="{healthy}", alertstate="pending"}}[15m])')
    assert {r["metric"]["alertname"] for r in pending} <= {"SlatmonTargetDown"}
    delivered = [a for d in e2e.webhook.snapshot() for a in d.body.get("alerts", [])]
    assert not [a for a in delivered if a["labels"].get("run") == healthy]
    assert [a for a in delivered if a["labels"].get("run") == e2e.names["fault"]], "the check can fail"


def test_every_alert_expression_is_well_formed_and_evaluated(e2e: E2E) -> None:
    scraped = {r["metric"]["__name__"] for r in e2e.prom.query('{__name__=~"slatmon_.+"}', at=e2e.at)}
    for alert in ALERTS:
        result = e2e.prom.query(alert.expr, at=e2e.at)  # raises unless Prometheus accepts it
        print(f"\n{alert.name}: {sorted(runs_in(result)) or 'empty'}")
        assert e2e.names["healthy"] not in runs_in(result), alert.name
        assert metric_names(alert.expr) <= scraped, f"{alert.name}: unknown metric"
    nonfinite = e2e.prom.query(ALERTS[0].expr, at=e2e.at)
    assert e2e.names["fault"] in runs_in(nonfinite)


def test_recording_rules_produce_series(e2e: E2E) -> None:
    for rule in RECORDING:
        result = e2e.prom.query(rule.record, at=e2e.at)
        if rule.record == "slatmon:nonfinite_elements:worst_layer":
            assert runs_in(result) == {e2e.names["fault"]}
        else:
            assert result, rule.record


def panel_targets() -> list[tuple[str, str]]:
    board = build_dashboards()[DASHBOARD_UID]
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def test_every_dashboard_panel_query_returns_data(e2e: E2E) -> None:
    scraped = {r["metric"]["__name__"] for r in e2e.prom.query('{__name__=~"slatmon_.+"}', at=e2e.at)}
    empty = []
    for title, expr in panel_targets():
        hits = set()
        for run in e2e.names.values():
            query = expr.replace("$run", run).replace("$rank", ".*").replace("$__rate_interval", RATE_INTERVAL)
            hits |= runs_in(e2e.prom.query(query, at=e2e.at))
        print(f"\n{title}: {sorted(hits) or 'empty'}   {expr}")
        assert metric_names(expr) <= scraped, f"{title}: unknown metric in {expr}"
        if not hits:
            empty.append(title)
    assert set(empty) <= set(MAY_BE_EMPTY), f"panels without data: {empty}"
