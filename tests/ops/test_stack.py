"""`slat-monitor stack` as a user runs it: a subprocess with real Prometheus + Alertmanager."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from monitor.ops.targets import register
from tests.realservers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def start_stack(tmp_path: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, int, int]:
    prom_port, am_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "stack", "--dir", str(tmp_path / "stack"), "--scrape-interval", "1s",
         "--prometheus-port", str(prom_port), "--alertmanager-port", str(am_port), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, prom_port, am_port


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="sudo apt-get install prometheus")
def test_stack_discovers_new_runs_without_restart_and_stops_cleanly(tmp_path, standin_exporter) -> None:
    proc, prom_port, am_port = start_stack(tmp_path)
    registered = []
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        wait_until(lambda: get_json(f"{prom}/api/v1/rules")["status"] == "success", 60, what="stack up")
        rules = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
        assert {g["name"] for g in rules} == {"slatmon-alerts", "slatmon-recording"}
        active = wait_until(lambda: get_json(f"{prom}/api/v1/alertmanagers")["data"]["activeAlertmanagers"],
                            30, what="Prometheus sees Alertmanager")
        assert active[0]["url"].startswith(f"http://127.0.0.1:{am_port}/")
        with urllib.request.urlopen(f"http://127.0.0.1:{am_port}/-/ready", timeout=5) as resp:
            assert resp.status == 200
        # Two runs register while the stack runs: both get scraped, no restart, labels from the exporter.
        for run in ("run-a", "run-b"):
            port, _collector = standin_exporter(run)
            registered.append(register(tmp_path / "stack" / "targets", "127.0.0.1", port, run=run, rank=0))

        def scraped() -> set[str]:
            result = get_json(f"{prom}/api/v1/query?query=slatmon_step")["data"]["result"]
            return {r["metric"]["run"] for r in result}

        wait_until(lambda: scraped() == {"run-a", "run-b"}, 30, what="both runs scraped")
    finally:
        for reg in registered:
            reg.remove()  # the process-wide SIGTERM clean-up forgets them too
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert (tmp_path / "stack" / "prometheus-data").is_dir()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{prom}/-/ready", timeout=2)


def _announcement(proc: subprocess.Popen) -> list[str]:
    """The lines `slat-monitor stack` prints up to its "Ctrl-C stops the stack." line."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if "Ctrl-C stops the stack" in line:
            return lines
    raise AssertionError("stack exited before announcing itself:\n" + "\n".join(lines))


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="sudo apt-get install prometheus")
def test_stack_prints_links_that_work_and_says_where_alerts_go(tmp_path) -> None:
    """Issue 15: every page link printed answers 200 on the installed builds (Debian's Prometheus serves
    /classic/alerts, not /alerts); no web-UI link for an Alertmanager that has none; no --webhook is said."""
    proc, prom_port, am_port = start_stack(tmp_path)
    try:
        lines = _announcement(proc)
        links = [url for line in lines if line.startswith("  ") for url in re.findall(r"http://[^\s()]+", line)]
        pages = [u for u in links if u.startswith(f"http://127.0.0.1:{prom_port}/")]
        assert {u.rsplit("/", 1)[1] for u in pages} >= {"alerts", "targets", "graph"}, lines
        for url in links:
            with urllib.request.urlopen(url.replace("/#/", "/"), timeout=5) as resp:
                assert resp.status == 200, url
        if not _has_alertmanager_ui(am_port):
            assert any("web UI:   none in this build" in line for line in lines), lines
            assert f"http://127.0.0.1:{am_port}/#/alerts" not in links
        assert any("delivers alerts nowhere; pass --webhook URL" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def _has_alertmanager_ui(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/script.js", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_missing_prometheus_names_the_package(tmp_path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH
    proc, _, _ = start_stack(tmp_path, env=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "apt-get install prometheus" in out
