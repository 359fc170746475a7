"""Shared real-server fixtures: a real Prometheus, a real Alertmanager and a local webhook receiver.

Every server binds 127.0.0.1 on a free port, keeps its data in the test's tmp_path, and is stopped
(SIGTERM, then SIGKILL) at teardown. Module-scoped variants (`module_servers`, `module_webhook_receiver`)
share one set-up among the tests of a module. Tests that need a binary that is not installed are skipped with the
Debian package to install. Typical use:

    def test_x(prometheus_server, tmp_path):
        prom = prometheus_server(prometheus_config(targets_glob=str(tmp_path / "t/*.json"), interval="1s"))
        prom.wait_for(lambda: prom.query("up"), timeout=20)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.realservers import PrometheusServer, ServerProcess, Servers, WebhookReceiver


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """A `Servers` pool under tmp_path: `.prometheus(config)`, `.alertmanager(config)`; all stopped at teardown."""
    pool = Servers(tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Like `servers`, shared by the tests of one module (for expensive end-to-end set-ups)."""
    pool = Servers(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.close()


@pytest.fixture
def prometheus_server(servers: Servers) -> Callable[..., PrometheusServer]:
    """Factory: `prometheus_server(config, name="prometheus") -> PrometheusServer`, a real `prometheus`.

    `config` is a Prometheus config as a dict (written to <tmp>/<name>/prometheus.yml) or a path to one.
    Relative paths inside a dict config resolve against that folder, so pass absolute paths for rule
    files and file_sd globs (`monitor.ops.configs.prometheus_config(...)` builds one). The server runs
    without the lifecycle API (`.reload()` sends SIGHUP), a fresh TSDB in <tmp>/<name>/data, and is stopped at
    teardown. Call it several times (distinct `name`s) for several servers. Skips the test when
    prometheus is not installed. Helpers: `.query(expr, at=None)`, `.api(path, **params)`, `.alerts()`,
    `.wait_for(predicate, timeout)`, `.log_tail()`."""
    return servers.prometheus


@pytest.fixture
def alertmanager_server(servers: Servers) -> Callable[..., ServerProcess]:
    """Factory: `alertmanager_server(config, name="alertmanager") -> ServerProcess`, a real Alertmanager
    (`prometheus-alertmanager`) with clustering disabled, state in <tmp>/<name>/data, stopped at teardown.
    `config` is an Alertmanager config dict (`monitor.ops.configs.alertmanager_config(webhook_url)`)."""
    return servers.alertmanager


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A `WebhookReceiver` on 127.0.0.1 (`.url`, `.deliveries`, `.wait_for(pred)`), closed at teardown."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def module_webhook_receiver() -> Iterator[WebhookReceiver]:
    """Like `webhook_receiver`, shared by the tests of one module."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()

