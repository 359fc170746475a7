"""Fill the per-target placeholders of the shared alert templates (see monitor/ops/alerts.py)."""

from __future__ import annotations

from .alerts import DEFAULT_DOCS_URL, TRIAGE_LINK, VALUE_FORMATS, AlertRule

__all__ = ["annotations"]


def _fill(text: str, value_ref: str, triage: str, docs: str) -> str:
    for placeholder, func in VALUE_FORMATS.items():
        text = text.replace("{" + placeholder + "}", "{{ " + value_ref + " | " + func + " }}")
    return text.replace("{triage}", triage).replace("{docs}", docs)


def annotations(rule: AlertRule, value_ref: str, triage: str, docs: str = DEFAULT_DOCS_URL) -> dict[str, str]:
    """The `summary`, `description`, `runbook_url`, `dashboard_url` and `triage_url` (the same link as
    dashboard_url, kept for existing receivers) annotations of `rule` for one target system.

    `value_ref` is the template expression of the alert's value (`$value` in Prometheus,
    `$values.A.Value` in Grafana); `triage` / `docs` the base URLs of the triage page and of the docs,
    literal or a template."""
    link = _fill(TRIAGE_LINK, value_ref, triage, docs)
    return {
        "summary": _fill(rule.summary, value_ref, triage, docs),
        "description": _fill(rule.description, value_ref, triage, docs),
        "runbook_url": _fill(rule.runbook_url, value_ref, triage, docs),
        "dashboard_url": link,
        "triage_url": link,
    }
