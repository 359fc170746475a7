"""Detection latency: from the first non-finite value to the metric, the finding, the alert, the page.

    python -m bench.detection [--interval 5s] [--every 1] [--step-seconds 0.1]

Real servers on 127.0.0.1 (tests/realservers.py): Prometheus with the shipped configuration
(`monitor.ops.configs.prometheus_config`, scrape and evaluation every `--interval`, the committed
rules in prometheus/rules/), Alertmanager with the shipped routing (critical: group_wait 0s) and a
local webhook receiver. A watched MLP trains in this process, paced to `--step-seconds` per step,
found by Prometheus through file_sd. Once Prometheus scrapes it, a NaN is put into the input batch
of one step (t0: before that forward); then, counted in steps and seconds from t0:
- metric: `slatmon_nonfinite_elements` > 0 on the watcher's own /metrics (polled after each step);
- finding: a critical finding from `w.findings()` (after each step);
- alert firing: `SlatmonNonFiniteValues` firing in Prometheus's /api/v1/alerts (polled every 0.1 s);
- delivered: Alertmanager's webhook POST of it reaching the receiver.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch
from torch import nn

import monitor
from monitor.ops.configs import alertmanager_config, prometheus_config

__all__ = ["main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
ALERT = "SlatmonNonFiniteValues"


class _Watch(threading.Thread):
    """Polls Prometheus and the webhook receiver; stamps (time, training step) of the first sighting."""

    def __init__(self, prom, webhook, counter) -> None:  # noqa: ANN001 - tests.realservers types
        super().__init__(daemon=True)
        self.prom, self.webhook, self.counter = prom, webhook, counter
        self.firing: tuple[float, int] | None = None
        self.delivered: tuple[float, int] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.delivered is None:
            now = time.perf_counter()
            if self.firing is None and any(a["labels"].get("alertname") == ALERT and a["state"] == "firing"
                                           for a in self.prom.alerts()):
                self.firing = (now, self.counter())
            for d in self.webhook.snapshot():
                alerts = d.body.get("alerts", []) if isinstance(d.body, dict) else []
                if any(a["labels"].get("alertname") == ALERT and a["status"] == "firing" for a in alerts):
                    self.delivered = (now, self.counter())
            time.sleep(0.1)


def _metric_nonfinite(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
    return any(line.startswith("slatmon_nonfinite_elements{") and not line.endswith(" 0.0")
               for line in body.splitlines())


class _Trainer:
    """A watched MLP paced to `step_seconds` per step; `step` counts the steps taken."""

    def __init__(self, every: int, targets: Path, step_seconds: float) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x, self.step, self.step_seconds = torch.randn(16, 32), 0, step_seconds
        self.w = monitor.watch(self.model, self.opt, every=every, port=0, run="detect", targets_dir=targets)

    def train(self, batch: torch.Tensor | None = None) -> None:
        t = time.perf_counter()
        self.opt.zero_grad()
        loss = self.model(self.x if batch is None else batch).pow(2).mean()
        self.w.observe_loss(loss)
        loss.backward()
        self.opt.step()
        self.step += 1
        time.sleep(max(0.0, self.step_seconds - (time.perf_counter() - t)))


def _after_fault(t: _Trainer, poll: _Watch, timeout_s: float) -> tuple[int, dict[str, tuple[float, int] | None]]:
    """Poison one batch, keep training until the page arrives: (faulty step, first sightings as
    (seconds, steps) from the fault)."""
    bad = t.x.clone()
    bad[0, 0] = float("nan")
    fault_step, t0 = t.step + 1, time.perf_counter()
    t.train(bad)
    metric = finding = None
    while poll.delivered is None and time.perf_counter() - t0 < timeout_s:
        if metric is None and _metric_nonfinite(t.w.url):  # type: ignore[arg-type]
            metric = (time.perf_counter(), t.step)
        if finding is None and any(f.severity == "critical" for f in t.w.findings()):
            finding = (time.perf_counter(), t.step)
        t.train()
    poll.stop.set()
    poll.join(timeout=5)
    hits = {"metric": metric, "finding": finding, "alert firing": poll.firing, "delivered": poll.delivered}
    return fault_step, {k: None if v is None else (v[0] - t0, v[1] - fault_step + 1) for k, v in hits.items()}


def measure(interval: str, every: int, step_seconds: float, tmp: Path, timeout_s: float = 120) -> dict:
    """Start the servers, train until Prometheus scrapes the run, put a NaN in, time the chain."""
    from tests.realservers import Servers, WebhookReceiver, wait_until

    servers, webhook = Servers(tmp), WebhookReceiver()
    targets = tmp / "targets"
    targets.mkdir()
    try:
        am = servers.alertmanager(alertmanager_config(webhook.url))
        prom = servers.prometheus(prometheus_config(
            targets_glob=str(targets / "*.json"), rule_globs=(str(ROOT / "prometheus" / "rules" / "*.yml"),),
            alertmanager=f"127.0.0.1:{am.port}", interval=interval))
        t = _Trainer(every, targets, step_seconds)
        try:
            deadline = time.monotonic() + 60
            while not prom.query('slatmon_step{run="detect"}') and time.monotonic() < deadline:
                t.train()
            wait_until(lambda: prom.query('slatmon_step{run="detect"}'), 30, what="the first scrape")
            poll = _Watch(prom, webhook, lambda: t.step)
            poll.start()
            fault_step, hits = _after_fault(t, poll, timeout_s)
        finally:
            t.w.close()
        out: dict = {"interval": interval, "every": every, "step_seconds": step_seconds, "fault_step": fault_step}
        for name, hit in hits.items():
            out[name] = None if hit is None else {"seconds": hit[0], "steps": hit[1]}
        return out
    finally:
        webhook.close()
        servers.close()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.split("\n")[0])
    p.add_argument("--interval", default="5s", help="Prometheus scrape + rule evaluation interval (shipped: 5s)")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--step-seconds", type=float, default=0.1, help="pace of the training loop")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="slatmon-detect-") as tmp:
        r = measure(a.interval, a.every, a.step_seconds, Path(tmp))
    print(f"interval={r['interval']} every={r['every']} step={r['step_seconds']} s, NaN put in at step "
          f"{r['fault_step']}\n\n| from the first NaN to | steps (incl. the faulty one) | seconds |\n|---|---|---|")
    for name in ("metric", "finding", "alert firing", "delivered"):
        hit = r[name]
        print(f"| {name} | {'-' if hit is None else hit['steps']} | "
              f"{'not seen' if hit is None else format(hit['seconds'], '.2f')} |")
    return r


if __name__ == "__main__":
    main()
