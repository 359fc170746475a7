"""The end-to-end set-up of tests/ops/test_e2e.py: real trainer_example runs, watched by monitor.watch,
found through file_sd, scraped every second by a real Prometheus evaluating the committed rules, alerts
routed by a real Alertmanager to a local webhook receiver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.ops.configs import alertmanager_config, prometheus_config
from tests.realservers import Delivery, PrometheusServer, Servers, WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
STEPS = 30
MIN_SAMPLES = 6  # scrapes of each run before `at` (range functions need several)
RUNS = {"fault": "eps-underflow", "healthy": "none"}
ALERT = "SlatmonNonFiniteValues"


@dataclass
class E2E:
    """What the set-up observed. `at`: a Unix time at which both runs had been scraped MIN_SAMPLES
    times (queries are evaluated at it); `firing`: the Prometheus alert when first seen
    firing; `delivery`: the first webhook notification of it; `records`: run-record paths."""

    prom: PrometheusServer
    webhook: WebhookReceiver
    names: dict[str, str]
    records: dict[str, Path]
    logs: dict[str, Path]
    at: float | None = None
    firing: dict[str, Any] | None = None
    firing_seen: float | None = None
    delivery: Delivery | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)


def start_trainer(fault: str, name: str, record: Path, targets: Path, log: Path, stop: Path) -> subprocess.Popen:
    """A watched trainer_example run (tests/ops/train_driver.py) announcing itself via SLATMON_TARGETS_DIR;
    it keeps serving /metrics after its last step until `stop` exists."""
    env = {**os.environ, "SLATMON_TARGETS_DIR": str(targets), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "tests.ops.train_driver", "--fault", fault, "--run", name,
            "--record", str(record), "--steps", str(STEPS), "--stop-file", str(stop)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _delivered(d: Delivery, run: str) -> bool:
    alerts = d.body.get("alerts", []) if isinstance(d.body, dict) else []
    return any(a["labels"].get("alertname") == ALERT and a["labels"].get("run") == run
               and a["status"] == "firing" for a in alerts)


def _lingering(log: Path) -> bool:
    return "lingering until" in log.read_text(errors="replace")


def _observe(e: E2E) -> None:
    """One polling round: fill `at`, `firing` and `delivery` as they become true."""
    if e.at is None:
        counts = {r["metric"]["run"]: float(r["value"][1])
                  for r in e.prom.query("count_over_time(slatmon_step[5m])")}
        if all(counts.get(n, 0) >= MIN_SAMPLES for n in e.names.values()):
            e.at = time.time()
    if e.firing is None:
        e.firing = next((a for a in e.prom.alerts() if a["labels"]["alertname"] == ALERT
                         and a["labels"].get("run") == e.names["fault"] and a["state"] == "firing"), None)
        e.firing_seen = time.time() if e.firing else None
    if e.delivery is None:
        e.delivery = next((d for d in e.webhook.snapshot() if _delivered(d, e.names["fault"])), None)


def run_e2e(servers: Servers, webhook: WebhookReceiver, root: Path, timeout_s: float = 240) -> E2E:
    """Start Alertmanager, Prometheus (1 s scrapes) and both trainer runs; watch until everything was
    observed and both runs exited (or `timeout_s`)."""
    targets = root / "targets"
    targets.mkdir()
    am = servers.alertmanager(alertmanager_config(webhook.url, group_wait="0s", group_interval="1s",
                                                  repeat_interval="1h"))
    prom = servers.prometheus(prometheus_config(
        targets_glob=str(targets / "*.json"), rule_globs=(str(ROOT / "prometheus" / "rules" / "*.yml"),),
        alertmanager=f"127.0.0.1:{am.port}", interval="1s", triage_url="http://triage.test"))
    names = {kind: f"e2e-{kind}" for kind in RUNS}
    e = E2E(prom, webhook, names, {k: root / f"{k}.sqlite" for k in RUNS}, {k: root / f"{k}.log" for k in RUNS})
    stop = root / "stop"
    procs = {k: start_trainer(RUNS[k], names[k], e.records[k], targets, e.logs[k], stop) for k in RUNS}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not all(p.poll() is not None for p in procs.values()):
            _observe(e)
            if e.at and e.firing and e.delivery and all(_lingering(e.logs[k]) for k in RUNS):
                break
            time.sleep(0.25)
        stop.touch()  # the runs close their watchers (target files removed) and exit
        for proc in procs.values():
            proc.wait(timeout=60)
    finally:
        for kind, proc in procs.items():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            e.exit_codes[kind] = proc.returncode
    return e
