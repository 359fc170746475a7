"""The web pages a running Prometheus / Alertmanager really serves, so `slat-monitor stack` prints links that work.

Upstream Prometheus serves its UI at /alerts, /targets, /graph; Debian's build (packaged without the React
assets) serves the classic UI under /classic/ and answers 404 on /alerts. Debian's Alertmanager has no web
UI at all (its / is a page saying so, /script.js of the real UI is missing); its API and `amtool` work.
Asking the started server is more reliable than guessing from a version string.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request

__all__ = ["PROMETHEUS_PAGES", "alertmanager_cli_hint", "alertmanager_ui", "prometheus_pages"]

PROMETHEUS_PAGES = ("alerts", "targets", "graph")


def _serves(url: str) -> bool:
    """True when GET `url` answers 200 (after redirects)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def prometheus_pages(base: str) -> dict[str, str]:
    """{page: URL} for the alerts, targets and graph pages of the Prometheus at `base`; {} when it serves
    neither the current nor the classic UI (the HTTP API under /api/v1 still works then)."""
    for prefix in ("", "/classic"):
        if _serves(f"{base}{prefix}/alerts"):
            return {page: f"{base}{prefix}/{page}" for page in PROMETHEUS_PAGES}
    return {}


def alertmanager_ui(base: str) -> str | None:
    """The alerts page of the Alertmanager at `base`, or None when this build has no web UI (Debian's)."""
    return f"{base}/#/alerts" if _serves(f"{base}/script.js") else None


def alertmanager_cli_hint(base: str) -> str:
    """How to list active alerts without a web UI: amtool when installed, else the HTTP API."""
    api = f"{base}/api/v2/alerts"
    if shutil.which("amtool"):
        return f"amtool --alertmanager.url={base} alert query   (or {api})"
    return api
