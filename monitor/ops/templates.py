"""Fill the per-target placeholders of the shared alert templates (see monitor/ops/alerts.py)."""

from __future__ import annotations

from .alerts import TRIAGE_LINK, VALUE_FORMATS, AlertRule

__all__ = ["annotations"]


def _fill(text: str, value_ref: str, triage: str) -> str:
    for placeholder, func in VALUE_FORMATS.items():
        text = text.replace("{" + placeholder + "}", "{{ " + value_ref + " | " + func + " }}")
    return text.replace("{triage}", triage)


def annotations(rule: AlertRule, value_ref: str, triage: str) -> dict[str, str]:
    """The `summary`, `description` and `triage_url` annotations of `rule` for one target system.

    `value_ref` is the template expression of the alert's value (`$value` in Prometheus,
    `$values.A.Value` in Grafana); `triage` the base URL of the triage page, literal or a template."""
    return {
        "summary": _fill(rule.summary, value_ref, triage),
        "description": _fill(rule.description, value_ref, triage),
        "triage_url": _fill(TRIAGE_LINK, value_ref, triage),
    }
