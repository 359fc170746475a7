"""Upload slat-monitor's dashboards and Grafana-managed alert rules to an existing Grafana (grafana-client).

Idempotent: everything has a fixed UID and is overwritten in place - the folder is created once,
dashboards are saved with `overwrite: true`, each alert rule is created (POST) or updated (PUT) by UID,
and the rule group's evaluation interval is set. Optionally the Prometheus datasource is created or
updated under its fixed UID. Endpoints used (Grafana HTTP API):

    GET/POST  /api/folders[/{uid}]                      POST /api/dashboards/db
    GET/POST/PUT /api/v1/provisioning/alert-rules[/{uid}]
    GET/PUT   /api/v1/provisioning/folder/{folder}/rule-groups/{group}
    GET/POST/PUT /api/datasources[/uid/{uid}]           (only with a Prometheus URL)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from .alerts import DEFAULT_TRIAGE_URL, GROUP
from .ids import DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, RULE_GROUP_INTERVAL
from .render_grafana import api_rules

__all__ = ["push"]


def _exists(get: Callable[[], Any]) -> bool:
    try:
        get()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def _datasource(api: GrafanaApi, uid: str, prometheus_url: str) -> str:
    body = {"name": "slat-monitor Prometheus", "uid": uid, "type": "prometheus", "access": "proxy",
            "url": prometheus_url, "jsonData": {"timeInterval": "5s"}}
    if _exists(lambda: api.datasource.get_datasource_by_uid(uid)):
        api.datasource.update_datasource_by_uid(uid, body)
        return f"datasource {uid}: updated ({prometheus_url})"
    api.datasource.create_datasource(body)
    return f"datasource {uid}: created ({prometheus_url})"


def _rules(api: GrafanaApi, datasource_uid: str, triage_url: str, editable: bool) -> list[str]:
    done = []
    for rule in api_rules(datasource_uid, triage_url):
        if _exists(lambda uid=rule["uid"]: api.alertingprovisioning.get_alertrule(uid)):
            api.alertingprovisioning.update_alertrule(rule["uid"], rule, disable_provenance=editable)
            done.append(f"alert rule {rule['uid']}: updated")
        else:
            api.alertingprovisioning.create_alertrule(rule, disable_provenance=editable)
            done.append(f"alert rule {rule['uid']}: created")
    group = api.alertingprovisioning.get_rule_group(FOLDER_UID, GROUP)
    group["interval"] = int(RULE_GROUP_INTERVAL.rstrip("s"))
    api.alertingprovisioning.update_rule_group(FOLDER_UID, GROUP, group, disable_provenance=editable)
    done.append(f"rule group {GROUP}: interval {RULE_GROUP_INTERVAL}")
    return done


def push(api: GrafanaApi, datasource_uid: str = DATASOURCE_UID, triage_url: str = DEFAULT_TRIAGE_URL,
         prometheus_url: str | None = None, editable: bool = False) -> list[str]:
    """Upload everything to the Grafana behind `api`; returns one line per object written.

    `datasource_uid`: the Prometheus datasource the dashboards and rules query (an existing one of
    yours, or ours when `prometheus_url` is given). `editable`: rules stay editable in Grafana's UI
    (X-Disable-Provenance); by default they are marked provisioned. Raises grafana_client's
    GrafanaException on HTTP errors."""
    from monitor.grafana.main import build_dashboards  # grafana/ in a checkout: dashboards as code

    done = []
    if prometheus_url:
        done.append(_datasource(api, datasource_uid, prometheus_url))
    if not _exists(lambda: api.folder.get_folder(FOLDER_UID)):
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        done.append(f"folder {FOLDER_UID}: created")
    for uid, board in build_dashboards(datasource_uid).items():
        api.dashboard.update_dashboard({"dashboard": {**board, "id": None}, "folderUid": FOLDER_UID,
                                        "overwrite": True, "message": "slat-monitor grafana push"})
        done.append(f"dashboard {uid}: saved")
    done.extend(_rules(api, datasource_uid, triage_url, editable))
    return done
