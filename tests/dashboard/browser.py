"""The triage page in a real browser: `slat-monitor triage` as a subprocess on 127.0.0.1 and headless
Chromium driven by Playwright. Also makes docs/img/triage.png:

    .venv/bin/python -m tests.dashboard.browser docs/img/triage.png
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.realservers import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READY_TIMEOUT_S = 90


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.read().strip() == b"ok"
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def triage_server(*args: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`slat-monitor triage ARGS --port FREE` until its health check answers; yields (base URL, process);
    always stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "triage", *args, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"triage page not serving (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def capture(url: str, wait_text: str, screenshot: Path, height: int = 1800) -> str:
    """Open `url` in headless Chromium, wait until `wait_text` is shown and the script run has finished
    (charts drawn), save a screenshot of a 1400 x `height` viewport, return the page's visible text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(url, timeout=60_000)
            page.get_by_text(wait_text).first.wait_for(timeout=60_000)
            page.get_by_text("Events", exact=True).wait_for(timeout=60_000)  # the last section
            page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=60_000)
            page.locator("[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] svg").first.wait_for(
                timeout=60_000)
            page.wait_for_timeout(1000)  # let vega finish laying out the charts
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            return page.inner_text("body")
        finally:
            browser.close()


def main(out: str) -> None:
    """Write a screenshot of the page for a TRELLIS #162 run (fp16 blocks, AdamW eps=1e-8) to `out`."""
    from .runs import eps_underflow_record

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs").mkdir()
        record = eps_underflow_record(Path(tmp) / "runs" / "slat-vae-162.sqlite")
        with triage_server(str(record), log=Path(tmp) / "triage.log") as (url, _):
            capture(url, "parameters became non-finite in the update", Path(out), height=3150)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/triage.png")
