"""Prometheus and Alertmanager configuration documents for slat-monitor.

One function per file so the committed examples (prometheus/prometheus.yml, prometheus/alertmanager.yml)
and what `slat-monitor stack` and the tests run are the same configuration with different paths/intervals.
Relative paths in a Prometheus config resolve against the config file's folder.
"""

from __future__ import annotations

from typing import Any

from .alerts import DEFAULT_DOCS_URL, DEFAULT_TRIAGE_URL

__all__ = ["FEDERATE_JOB", "FEDERATE_MATCH", "JOB", "alertmanager_config", "federation_config", "prometheus_config"]

JOB = "slatmon"  # the scrape job; SlatmonTargetDown selects up{job="slatmon"}
FEDERATE_JOB = "slatmon-federate"
# What a global Prometheus pulls from each node's: the raw series of the watched ranks (`up` included)
# and the node's recording rules.
FEDERATE_MATCH = ('{job="slatmon"}', '{__name__=~"slatmon:.+"}')


def prometheus_config(
    targets_glob: str = "targets/*.json",
    rule_globs: tuple[str, ...] = ("rules/*.yml",),
    alertmanager: str | None = "127.0.0.1:9093",
    interval: str = "5s",
    triage_url: str = DEFAULT_TRIAGE_URL,
    docs_url: str = DEFAULT_DOCS_URL,
    node: str | None = None,
) -> dict[str, Any]:
    """A Prometheus config scraping every target listed in the file_sd files matching `targets_glob`.

    `honor_labels` keeps the run/rank labels the watched process exports even when the target file sets
    them too. New target files are picked up without a restart (inotify, plus a re-read every
    `interval`). `triage_url` and `docs_url` become the external labels the alert templates link to
    (dashboard_url and runbook_url annotations). `node`: an external label naming this node's
    Prometheus, kept on every series a global Prometheus federates from it."""
    doc: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"triage_url": triage_url.rstrip("/"), "docs_url": docs_url.rstrip("/")},
        },
        "rule_files": list(rule_globs),
        "scrape_configs": [{
            "job_name": JOB,
            "honor_labels": True,
            "file_sd_configs": [{"files": [targets_glob], "refresh_interval": interval}],
        }],
    }
    if node:
        doc["global"]["external_labels"]["node"] = node
    if alertmanager:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return doc


def federation_config(nodes: list[str], rule_globs: tuple[str, ...] = ("rules/*.yml",),
                      alertmanager: str | None = "127.0.0.1:9093", interval: str = "15s",
                      triage_url: str = DEFAULT_TRIAGE_URL, docs_url: str = DEFAULT_DOCS_URL) -> dict[str, Any]:
    """A global Prometheus federating the node-level ones (`host:port` each): one view of every rank.

    The alert rules belong here - the cross-rank alerts compare ranks that live on different nodes - so
    the node-level Prometheus servers run without rules (`prometheus_config(rule_globs=(),
    alertmanager=None, node=...)`). `honor_labels` keeps run, rank and node as the nodes have them."""
    doc = prometheus_config(rule_globs=rule_globs, alertmanager=alertmanager, interval=interval,
                            triage_url=triage_url, docs_url=docs_url)
    doc["scrape_configs"] = [{
        "job_name": FEDERATE_JOB,
        "honor_labels": True,
        "metrics_path": "/federate",
        "params": {"match[]": list(FEDERATE_MATCH)},
        "static_configs": [{"targets": list(nodes)}],
    }]
    return doc


def alertmanager_config(webhook_url: str | None = "http://127.0.0.1:5001/", group_wait: str = "10s",
                        group_interval: str = "1m", repeat_interval: str = "4h") -> dict[str, Any]:
    """An Alertmanager config sending every slat-monitor alert to one webhook, grouped per run and rank.

    Critical alerts use `group_wait: 0s` so a non-finite value pages at once; the rest wait `group_wait`
    to batch. `webhook_url=None`: a receiver without integrations (alerts only in Alertmanager's UI).
    Replace the receiver with your pager/chat integration."""
    receiver: dict[str, Any] = {"name": "slatmon-webhook"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {
            "receiver": "slatmon-webhook",
            "group_by": ["alertname", "run", "rank"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": [{"receiver": "slatmon-webhook", "matchers": ['severity="critical"'], "group_wait": "0s"}],
        },
        "receivers": [receiver],
    }
