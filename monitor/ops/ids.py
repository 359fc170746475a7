"""Fixed identifiers shared by the Grafana provisioning files, the dashboards and `slat-monitor grafana push`.

Fixed UIDs make provisioning and pushes idempotent (overwrite by UID) and let alert rules and panels
reference the Prometheus datasource without looking it up.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_UID", "DATASOURCE_UID", "FOLDER_TITLE", "FOLDER_UID", "RULE_GROUP_INTERVAL"]

DATASOURCE_UID = "slatmon-prometheus"
FOLDER_UID = "slat-monitor"
FOLDER_TITLE = "slat-monitor"
DASHBOARD_UID = "slatmon-training-health"
RULE_GROUP_INTERVAL = "10s"  # Grafana's default minimum evaluation interval
