"""The HTTP servers under hostile requests: a watched run's /metrics endpoint refuses foreign Host names
(DNS rebinding) with 403 and no data; the stack's Prometheus has no lifecycle API (POST /-/quit and
/-/reload are refused, it stays up) and lets no other site's pages read its API (CORS); `slat-monitor
grafana push` prints no credential (from the URL, the token, or a server's error text), refuses
user:password in --url, and does not send the token over plain http to another machine without
--insecure. Against real servers: the watcher's endpoint, the `slat-monitor stack` subprocess, and the
protocol fake of Grafana (tests/ops/fake_grafana.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import monitor
from monitor.cli import main
from monitor.export.hosts import allowed_hosts, host_allowed
from monitor.ops.redact import MASK, is_loopback, redact_text, redact_url
from tests.models import Fp16Blocks, watched_step
from tests.ops.fake_grafana import FakeGrafana
from tests.realservers import free_port

TOKEN = "glsa_SeCrEtToKeN_0123456789abcdef"


def _get(port: int, host: str | None) -> tuple[int, bytes]:
    """(status, body) of a raw HTTP/1.1 GET /metrics whose Host header is `host` (None: no Host)."""
    head = f"GET /metrics HTTP/1.1\r\n{f'Host: {host}' + chr(13) + chr(10) if host is not None else ''}" \
           "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status, _, rest = data.partition(b"\r\n")
    return int(status.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    """The /metrics port of a watched run (one fp32 step) on 127.0.0.1, open for the module."""
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with monitor.watch(model, opt, port=0, record=None, run="host-check") as w:
        watched_step(model, opt, w, 1)
        yield int(w.url.rsplit(":", 1)[1].split("/")[0])


def test_metrics_refuse_foreign_host_names(metrics_port: int) -> None:
    port = metrics_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", "127.0.0.1"):
        status, body = _get(port, host)
        assert status == 200 and b'slatmon_step{run="host-check"' in body, host
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"localhost.evil.example:{port}",
                 f"user@127.0.0.1:{port}", "[::1", "", None):
        status, body = _get(port, host)
        assert status == 403 and b"slatmon_" not in body and b"host-check" not in body, host


def test_metrics_host_rules() -> None:
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("::") is None
    assert host_allowed("evil.example:9108", allowed_hosts("0.0.0.0"))  # a wildcard bind: any name (documented)
    named = allowed_hosts("node7.cluster")
    assert host_allowed("node7.cluster:9108", named) and host_allowed("NODE7.CLUSTER.", named)
    assert not host_allowed("evil.example:9108", named) and not host_allowed("node7.cluster:port", named)
    assert host_allowed("[fd00::7]:9108", allowed_hosts("fd00::7"))


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="sudo apt-get install prometheus")
def test_stack_prometheus_has_no_lifecycle_api(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "stack", "--dir", str(tmp_path / "stack"),
                             "--no-alertmanager", "--prometheus-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for line in proc.stdout:  # the stack is up, its signal handlers next: SIGTERM then stops both servers
            if "Ctrl-C stops the stack" in line:
                break
        for path in ("/-/quit", "/-/reload"):  # what any web page could POST to 127.0.0.1
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(base + path, method="POST"), timeout=5)
            assert refused.value.code == 403 and b"Lifecycle API is not enabled" in refused.value.read()
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as resp:
            assert resp.status == 200 and proc.poll() is None
        for origin, allowed in (("http://evil.example", None), (base, base)):  # no site but its own reads it
            ask = urllib.request.Request(f"{base}/api/v1/query?query=up", headers={"Origin": origin})
            with urllib.request.urlopen(ask, timeout=5) as resp:
                assert resp.headers.get("Access-Control-Allow-Origin") == allowed, origin
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana(TOKEN)
    yield fake
    fake.close()


def _push(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["grafana", "push", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_grafana_push_never_prints_credentials(grafana, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    host = grafana.url.removeprefix("http://")
    code, out = _push(capsys, "--url", f"http://admin:hunter2pw@{host}")
    assert code == 2 and "carries credentials" in out and f"http://{MASK}@{host}" in out
    assert "hunter2pw" not in out and "admin" not in out and grafana.requests == []
    # A server whose error text echoes the token, a bearer header, a database URL with a password, and a lot more.
    grafana.fail = (500, f"upstream said: Authorization: Bearer {TOKEN} token={TOKEN} "
                         f"dsn=postgres://grafana:dbpass123@db:5432/g {'x' * 5000}")
    code, out = _push(capsys, "--url", grafana.url, "--prometheus-url", "http://prom:pw@127.0.0.1:9090")
    assert code == 1 and "HTTP 500: Server Error 500: upstream said: Authorization: ***" in out
    assert "characters)" in out  # cut short
    for secret in (TOKEN, "SeCrEt", "dbpass123", "pw@"):
        assert secret not in out, secret
    assert len(out) < 700
    grafana.fail = None
    code, out = _push(capsys, "--url", grafana.url, "--prometheus-url", "http://prom:promsecret@127.0.0.1:9090")
    assert code == 0 and f"(http://{MASK}@127.0.0.1:9090)" in out and "promsecret" not in out


def test_grafana_push_keeps_the_token_off_plain_http(grafana, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    for url in ("http://grafana.example:3000", "http://10.1.2.3:3000", "https://grafana.example/?verify=false"):
        code, out = _push(capsys, "--url", url)
        assert code == 2 and "--insecure" in out and TOKEN not in out, url
    code, out = _push(capsys, "--url", grafana.url)  # plain http to this machine is fine
    assert code == 0 and all(r.authorization == f"Bearer {TOKEN}" for r in grafana.requests)
    from monitor.commands.grafana import _url_problem

    assert _url_problem("http://grafana.example:3000", insecure=True) is None
    assert "credentials" in _url_problem("https://u:p@grafana.example", insecure=True)


def test_redaction_rules() -> None:
    assert redact_url("https://u:p@g.example:3000/x?api_key=abc&q=1") == f"https://{MASK}@g.example:3000/x?api_key={MASK}&q=1"
    text = redact_text('{"password": "pw1", "note": "glc_abcdefghij", "Authorization": "Basic dXNlcjpwYXNz"}')
    assert "pw1" not in text and "glc_abcdefghij" not in text and "dXNlcjpwYXNz" not in text and "note" in text
    assert redact_text("tokenless prose stays: author Bob, 3 rules") == "tokenless prose stays: author Bob, 3 rules"
    assert is_loopback("http://localhost:3000") and is_loopback("http://127.0.0.2") and is_loopback("http://[::1]:3")
    assert not is_loopback("http://10.0.0.1") and not is_loopback("http://localhost.evil.example")
