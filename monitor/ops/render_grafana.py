"""Render the shared alert definitions (monitor/ops/alerts.py) as Grafana-managed alert rules.

Each rule is query A (the PromQL expression, instant, against the Prometheus datasource by UID) and
condition C, a math expression that is true for every series A returns (NaN and Inf included): the
PromQL already filters, exactly as in Prometheus. Built with grafana-foundation-sdk's alerting builders;
`api_rules()` is the provisioning-API shape (`slat-monitor grafana push`), `provisioning_file()` the
file-provisioning shape (grafana/provisioning/alerting).
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import alerting, expr, prometheus
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from .alerts import ALERTS, DEFAULT_DOCS_URL, DEFAULT_TRIAGE_URL, GROUP, AlertRule
from .ids import DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, RULE_GROUP_INTERVAL
from .templates import annotations

__all__ = ["CONDITION", "api_rules", "provisioning_file"]

CONDITION = "is_number($A) || is_nan($A) || is_inf($A)"
# Longest range an alert expression looks back over (15m) plus slack; only "to" matters to an instant query.
LOOKBACK_SECONDS = 1200


def _rule(a: AlertRule, datasource_uid: str, triage_url: str, docs_url: str) -> alerting.Rule:
    query = (
        prometheus.Dataquery().expr(a.expr).instant().ref_id("A")
        .datasource(DataSourceRef(type_val="prometheus", uid=datasource_uid))
    )
    return (
        alerting.Rule(a.name).uid(a.uid).condition("C")
        .with_query(
            alerting.Query("A").datasource_uid(datasource_uid).model(query)
            .relative_time_range(alerting_models.RelativeTimeRange(from_val=LOOKBACK_SECONDS, to=0))
        )
        .with_query(alerting.Query("C").datasource_uid("__expr__")
                    .model(expr.TypeMath().expression(CONDITION).ref_id("C")))
        .for_val(a.for_)
        .labels({"severity": a.severity})
        .annotations(annotations(a, "$values.A.Value", triage_url.rstrip("/"), docs_url.rstrip("/")))
        .no_data_state("OK")
        .exec_err_state("Error")
        .is_paused(False)
        .rule_group(GROUP).folder_uid(FOLDER_UID).org_id(1)
    )


def api_rules(datasource_uid: str = DATASOURCE_UID, triage_url: str = DEFAULT_TRIAGE_URL,
              docs_url: str = DEFAULT_DOCS_URL) -> list[dict[str, Any]]:
    """Every alert as a provisioning-API rule (POST/PUT /api/v1/provisioning/alert-rules) as plain JSON."""
    encoder = JSONEncoder(sort_keys=True)
    return [json.loads(encoder.encode(_rule(a, datasource_uid, triage_url, docs_url).build())) for a in ALERTS]


def provisioning_file(datasource_uid: str = DATASOURCE_UID,
                      triage_url: str = DEFAULT_TRIAGE_URL) -> dict[str, Any]:
    """The file-provisioning document: one rule group in folder FOLDER_TITLE; group-level fields
    (folder, group, org) move from the rules to the group as Grafana's file format wants."""
    rules = []
    for rule in api_rules(datasource_uid, triage_url):
        for key in ("folderUID", "ruleGroup", "orgID"):
            rule.pop(key)
        rules.append(rule)
    group = {"orgId": 1, "name": GROUP, "folder": FOLDER_TITLE, "interval": RULE_GROUP_INTERVAL,
             "rules": rules}
    return {"apiVersion": 1, "groups": [group]}
