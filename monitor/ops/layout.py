"""The folder `slat-monitor stack` runs in: configs with absolute paths, rules, targets, data.

    <dir>/prometheus.yml      scrape config (file_sd over <targets>/*.json), rule files, Alertmanager
    <dir>/rules/*.yml         alert + recording rules, rendered from monitor/ops/alerts.py
    <dir>/targets/            file_sd target files (default; `--targets-dir` moves it)
    <dir>/prometheus-data/    TSDB
    <dir>/alertmanager.yml, <dir>/alertmanager-data/
    <dir>/*.log               server logs
Re-running overwrites the configs and rules and keeps the data and the target files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import configs, render_prometheus
from .alerts import DEFAULT_TRIAGE_URL

__all__ = ["StackLayout", "prepare"]


@dataclass(frozen=True)
class StackLayout:
    root: Path
    targets_dir: Path
    prometheus_config: Path
    alertmanager_config: Path | None

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus-data"

    @property
    def alertmanager_data(self) -> Path:
        return self.root / "alertmanager-data"


def prepare(root: Path, targets_dir: Path | None = None, alertmanager_port: int | None = 9093,
            webhook_url: str | None = None, interval: str = "5s",
            triage_url: str = DEFAULT_TRIAGE_URL) -> StackLayout:
    """Write the configs and rules under `root` (created) and return where everything is.

    `alertmanager_port=None`: no Alertmanager (Prometheus still evaluates the alerts)."""
    root = root.resolve()
    targets = (targets_dir or root / "targets").resolve()
    for folder in (root, targets, root / "rules"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "rules" / "slatmon-alerts.yml").write_text(
        render_prometheus.dump_yaml(render_prometheus.alert_rules()), encoding="utf-8")
    (root / "rules" / "slatmon-recording.yml").write_text(
        render_prometheus.dump_yaml(render_prometheus.recording_rules()), encoding="utf-8")
    am_target = f"127.0.0.1:{alertmanager_port}" if alertmanager_port else None
    prom_doc = configs.prometheus_config(targets_glob=str(targets / "*.json"),
                                         rule_globs=(str(root / "rules" / "*.yml"),),
                                         alertmanager=am_target, interval=interval, triage_url=triage_url)
    header = "# Written by `slat-monitor stack`; rewritten at every start.\n"
    prom_path = root / "prometheus.yml"
    prom_path.write_text(render_prometheus.dump_yaml(prom_doc, header), encoding="utf-8")
    am_path = None
    if alertmanager_port:
        am_path = root / "alertmanager.yml"
        am_path.write_text(render_prometheus.dump_yaml(configs.alertmanager_config(webhook_url), header),
                           encoding="utf-8")
    return StackLayout(root, targets, prom_path, am_path)
