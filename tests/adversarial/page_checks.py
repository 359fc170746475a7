"""Browser and raw-HTTP checks for the triage page's hostile-input tests (test_page_hostile.py): what in
the DOM could navigate or run something, loading a page until its script run is over, a chart tooltip,
a raw WebSocket handshake, and the page served by a bare `streamlit run` (no Host list of its own)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.commands.triage import app_path, streamlit_argv
from tests.dashboard.browser import READY_TIMEOUT_S, _healthy
from tests.realservers import free_port

__all__ = ["FOREIGN", "assert_inert", "bare_streamlit", "handshake", "hover_tooltip", "open_page"]

# Everything in the page that could navigate, load or run something and came from the data: inline
# handlers, links or sources naming the hostile hosts or schemes, script/frame/image elements, links.
FOREIGN = """() => {
  const root = document.querySelector('[data-testid=stApp]') || document.body;
  const risky = ['href', 'src', 'srcset', 'action', 'formaction', 'xlink:href', 'data', 'style', 'poster'];
  const found = [];
  for (const el of root.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const v = a.value.toLowerCase();
      if (a.name.startsWith('on') || (risky.includes(a.name) && (v.includes('evil.example')
          || v.includes('javascript:') || v === 'x')))
        found.push(el.tagName + ' ' + a.name + '=' + a.value);
    }
    if (['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'IMG'].includes(el.tagName)) found.push(el.outerHTML.slice(0, 120));
    if (el.tagName === 'A' && !(el.getAttribute('href') || '').startsWith('#')) found.push(el.outerHTML.slice(0, 120));
  }
  return found;
}"""


def open_page(page: Any, url: str, wait_text: str) -> str:
    """Load `url`, wait for `wait_text` and the end of the script run; the visible text, word joiners
    (monitor.dashboard.mdtext.JOINER, invisible) removed."""
    page.goto(url, timeout=60_000)
    page.get_by_text(wait_text).first.wait_for(timeout=60_000)
    # The script run is over (Streamlit's own end-to-end tests wait on this attribute); the status
    # widget is no sign of it: it shows only after a run has lasted a while.
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=60_000)
    return page.inner_text("[data-testid=stApp]").replace("\u2060", "")


def hover_tooltip(page: Any, chart: Any) -> Any:
    """Hover over the right part of `chart` (where its NaN band is) until Vega shows a tooltip; the
    tooltip element. Vega lays the chart out after the script run ends, so this retries for a while."""
    chart.scroll_into_view_if_needed()
    chart.locator("canvas, svg").first.wait_for(timeout=30_000)
    tip = page.locator("#vg-tooltip-element.visible")
    for _ in range(40):
        box = chart.bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.6, steps=4)
        if tip.count() and tip.is_visible():
            return tip
        page.wait_for_timeout(250)
    raise AssertionError("no chart tooltip appeared")


def assert_inert(page: Any) -> None:
    assert page.evaluate(FOREIGN) == []
    assert page.dialogs == []


def handshake(port: int, host: str) -> str:
    """The status line Streamlit answers to a WebSocket handshake naming `host`."""
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: http://{host}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]




@contextmanager
def bare_streamlit(env: dict[str, str], log: Path) -> Iterator[str]:
    """The page as `streamlit run dashboard/app.py` started by hand: `slat-monitor triage`'s settings
    without `server.allowedHosts`, so Streamlit itself accepts any Host and only the page's own check is
    left. Yields the base URL; the server is stopped on exit."""
    port = free_port()
    argv = streamlit_argv(app_path(), "127.0.0.1", port)  # python -m streamlit run APP, then --name value pairs
    settings = [(k, v) for k, v in zip(argv[5::2], argv[6::2]) if k != "--server.allowedHosts"]
    argv = argv[:5] + [x for pair in settings for x in pair]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not serving (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
