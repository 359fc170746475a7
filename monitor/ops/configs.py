"""Prometheus and Alertmanager configuration documents for slat-monitor.

One function per file so the committed examples (prometheus/prometheus.yml, prometheus/alertmanager.yml)
and what `slat-monitor stack` and the tests run are the same configuration with different paths/intervals.
Relative paths in a Prometheus config resolve against the config file's folder.
"""

from __future__ import annotations

from typing import Any

from .alerts import DEFAULT_TRIAGE_URL

__all__ = ["JOB", "alertmanager_config", "prometheus_config"]

JOB = "slatmon"  # the scrape job; SlatmonTargetDown selects up{job="slatmon"}


def prometheus_config(
    targets_glob: str = "targets/*.json",
    rule_globs: tuple[str, ...] = ("rules/*.yml",),
    alertmanager: str | None = "127.0.0.1:9093",
    interval: str = "5s",
    triage_url: str = DEFAULT_TRIAGE_URL,
) -> dict[str, Any]:
    """A Prometheus config scraping every target listed in the file_sd files matching `targets_glob`.

    `honor_labels` keeps the run/rank labels the watched process exports even when the target file sets
    them too. New target files are picked up without a restart (inotify, plus a re-read every
    `interval`). `triage_url` becomes the external label the alert templates link to."""
    doc: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"triage_url": triage_url.rstrip("/")},
        },
        "rule_files": list(rule_globs),
        "scrape_configs": [{
            "job_name": JOB,
            "honor_labels": True,
            "file_sd_configs": [{"files": [targets_glob], "refresh_interval": interval}],
        }],
    }
    if alertmanager:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return doc


def alertmanager_config(webhook_url: str | None = "http://127.0.0.1:5001/", group_wait: str = "10s",
                        group_interval: str = "1m", repeat_interval: str = "4h") -> dict[str, Any]:
    """An Alertmanager config sending every slat-monitor alert to one webhook, grouped per run and rank.

    Critical alerts use `group_wait: 0s` so a non-finite value pages at once; the rest wait `group_wait`
    to batch. `webhook_url=None`: a receiver without integrations: alerts are delivered nowhere (still listed by
    Alertmanager's API and `amtool`).
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
