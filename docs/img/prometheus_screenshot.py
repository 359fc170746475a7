"""Regenerate docs/img/prometheus.png: the Prometheus graph page of real watched trainer_example runs.

    .venv/bin/python docs/img/prometheus_screenshot.py

Starts `slat-monitor stack` (1 s scrapes) in a temp folder, a healthy run and an eps-underflow run
(tests/ops/train_driver.py, announced through SLATMON_TARGETS_DIR), waits for a minute of data, and
photographs /graph with headless Chromium (Playwright). Needs prometheus and /usr/bin/chromium.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img" / "prometheus.png"
QUERY = "slatmon_grad_norm_global"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="slatmon-shot-"))
    port = 19190
    stack = subprocess.Popen([sys.executable, "-m", "monitor", "stack", "--dir", str(tmp / "stack"),
                              "--scrape-interval", "1s", "--no-alertmanager", "--prometheus-port", str(port)],
                             cwd=ROOT)
    env = {**os.environ, "SLATMON_TARGETS_DIR": str(tmp / "stack" / "targets"), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "tests.ops.train_driver", "--fault", fault, "--run", name,
                              "--record", str(tmp / f"{name}.sqlite"), "--steps", str(steps), "--step-delay", "0.3",
                              "--stop-file", str(tmp / "stop")], cwd=ROOT, env=env)
            for fault, name, steps in (("none", "healthy-inflat_all", 200), ("eps-underflow", "trellis-162", 200))]
    try:
        time.sleep(70)
        url = f"http://127.0.0.1:{port}/graph?" + urllib.parse.urlencode(
            {"g0.expr": QUERY, "g0.tab": "0", "g0.range_input": "1m", "g0.stacked": "0", "g0.show_exemplars": "0"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            page.wait_for_selector(".graph_area svg, .graph_area canvas", timeout=30_000)  # classic UI (Debian)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(OUT), full_page=False)
            browser.close()
        print(f"wrote {OUT}")
    finally:
        (tmp / "stop").touch()
        for proc in runs:
            proc.wait(timeout=120)
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
