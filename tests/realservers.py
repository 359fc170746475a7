"""Real-server helpers behind tests/conftest.py's fixtures: start/stop Prometheus and Alertmanager
binaries on free 127.0.0.1 ports, a webhook receiver, polling. Test modules may import them directly
(`from tests.realservers import free_port, wait_until`).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = ["Delivery", "PrometheusServer", "ServerProcess", "Servers", "WebhookReceiver", "free_port",
           "http_json", "wait_until"]

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; a race with other processes is possible)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` seconds pass (AssertionError).
    Exceptions from `predicate` count as "not yet" and the last one is reported on timeout."""
    deadline, last_exc = time.monotonic() + timeout, None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a server that is still starting raises; retry
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def http_json(url: str, data: bytes | None = None, method: str | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


@dataclass
class ServerProcess:
    """A started server binary: `url` (http://127.0.0.1:PORT), its `workdir` and `log` file."""

    name: str
    url: str
    port: int
    workdir: Path
    log: Path
    process: subprocess.Popen

    def log_tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class PrometheusServer(ServerProcess):
    """A running Prometheus: HTTP API helpers that raise on API errors."""

    config_path: Path = field(default=Path())

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>?params -> the `data` member (AssertionError when status != success)."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        body = http_json(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the vector result, [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        data = self.api("query", query=expr, time=at)
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with labels, annotations, state, activeAt."""
        return self.api("alerts")["alerts"]

    def reload(self, timeout: float = 30) -> None:
        """Re-read config and rule files: SIGHUP (no lifecycle API, as in `slat-monitor stack`), then wait
        until Prometheus counts one more successful reload."""
        metric = "prometheus_config_last_reload_success_timestamp_seconds"

        def reloads() -> float:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
                line = next(x for x in resp.read().decode().splitlines() if x.startswith(metric + " "))
            return float(line.split()[1])

        before = reloads()
        time.sleep(max(0.0, before + 1.05 - time.time()))  # the timestamp has 1 s resolution
        self.process.send_signal(signal.SIGHUP)
        wait_until(lambda: reloads() > before, timeout, what="Prometheus reloading on SIGHUP")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        return wait_until(predicate, timeout, what=what)


def _start(name: str, argv: list[str], port: int, workdir: Path, cls: type = ServerProcess,
           **extra: Any) -> ServerProcess:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = cls(name=name, url=f"http://127.0.0.1:{port}", port=port, workdir=workdir, log=log,
                 process=proc, **extra)

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S} s:\n{server.log_tail()}")
        time.sleep(0.1)
    return server


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.skip(f"`{binary}` not installed: sudo apt-get install {package}")
    return path


class Servers:
    """Starts real servers under `root` and stops them all at `close()` (what the fixtures hand out)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[ServerProcess] = []

    def _workdir(self, name: str) -> Path:
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def prometheus(self, config: dict[str, Any] | Path, name: str = "prometheus") -> PrometheusServer:
        """See the `prometheus_server` fixture."""
        binary = _require("prometheus", "prometheus")
        workdir = self._workdir(name)
        if isinstance(config, dict):
            config_path = workdir / "prometheus.yml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        else:
            config_path = Path(config)
        port = free_port()
        argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        server = _start(name, argv, port, workdir, PrometheusServer, config_path=config_path)
        self.started.append(server)
        return server  # type: ignore[return-value]

    def alertmanager(self, config: dict[str, Any], name: str = "alertmanager") -> ServerProcess:
        """See the `alertmanager_server` fixture."""
        binary = _require("prometheus-alertmanager", "prometheus-alertmanager")
        workdir = self._workdir(name)
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [binary, f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]
        server = _start(name, argv, port, workdir)
        self.started.append(server)
        return server

    def close(self) -> None:
        for server in reversed(self.started):
            server.stop()


@dataclass
class Delivery:
    """One POST the webhook receiver got: wall-clock `received` (time.time()), `path`, parsed JSON `body`."""

    received: float
    path: str
    body: Any


class WebhookReceiver:
    """A local HTTP server (thread) recording every POST, e.g. Alertmanager webhook notifications."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                with receiver._lock:
                    receiver.deliveries.append(Delivery(time.time(), self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def wait_for(self, predicate: Callable[[Delivery], bool], timeout: float = 30) -> Delivery:
        """The first delivery matching `predicate`, waiting up to `timeout` seconds for it."""
        return wait_until(lambda: next((d for d in self.snapshot() if predicate(d)), None), timeout,
                          what="a matching webhook delivery")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
