"""Run records made once per session by real watched runs, and an AppTest factory for the page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from monitor.commands.triage import app_path

from .runs import eps_underflow_record, healthy_record, loss_scale_record, preflight_record

APP = app_path()  # the page `slat-monitor triage` serves: dashboard/app.py of this checkout (editable install)
ENV_VARS = ("SLATMON_RECORD", "SLATMON_PROMETHEUS", "SLATMON_RUN", "SLATMON_RANK", "SLATMON_LOOKBACK",
            "SLATMON_RECORDS_DIR")


@pytest.fixture(scope="session")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"eps": adam_eps_underflow record, "healthy": a clean fp32 run, "preflight": no steps, "scaler": a
    GradScaler run whose scale collapses at step 10}, each written by monitor.watch."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("records")
    return {"eps": eps_underflow_record(root / "eps.sqlite"), "healthy": healthy_record(root / "healthy.sqlite"),
            "preflight": preflight_record(root / "preflight.sqlite"),
            "scaler": loss_scale_record(root / "scaler.sqlite")}


@pytest.fixture
def app_page(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """Factory: `app_page(query={...}, env={...})` -> the AppTest of dashboard/app.py after its first run.
    SLATMON_* source variables are cleared first, so only `env` applies; the records folder is pytest's
    base temporary folder (every test's tmp_path and the session's records are under it) unless `env`
    sets SLATMON_RECORDS_DIR."""
    return page_runner(monkeypatch, records_dir=str(tmp_path_factory.getbasetemp()))


def page_runner(monkeypatch: pytest.MonkeyPatch, records_dir: str | None = None) -> Callable[..., object]:
    """The factory behind `app_page`: SLATMON_* source variables cleared, SLATMON_RECORDS_DIR set when
    `records_dir` is given; each call sets `env`, fills the query and runs the page once (no exception)."""
    from streamlit.testing.v1 import AppTest

    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    if records_dir is not None:
        monkeypatch.setenv("SLATMON_RECORDS_DIR", records_dir)

    def run(query: dict[str, str] | None = None, env: dict[str, str] | None = None) -> AppTest:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        at = AppTest.from_file(str(APP), default_timeout=60)
        for key, value in (query or {}).items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run
