"""The diagnosis of a run is the same read from its record and from a real Prometheus that scraped it
(every step, 1 s scrapes): the same finding codes, severities and first steps, over fault runs of
every kind (NaN batches, clipping spread, the TRELLIS #162 update, GradScaler and hand-made scale
overflows, an lr schedule that advances on skipped steps)."""

from __future__ import annotations

import math

import pytest

import monitor
from tests.models import scraping_prometheus
from tests.monitor.faults import NEVER_HEALTHY
from tests.monitor.matrix import Cell, run_cell

RUNS = {
    **{name: NEVER_HEALTHY[name] for name in ("fp32-nan-batch", "bf16-clip-spread", "fp16-nan-batch")},
    "trellis-162": Cell("fp16-pure", "adamw", eps=1e-8, steps=4),
    "amp-overflow": Cell("fp16-amp", bad_steps=(3, 4, 5, 6), steps=8),
    "inflat-overflow": Cell("inflat_all", container_root=True, bad_steps=(3, 4, 5, 6), steps=8),
    "sched-on-skip": Cell("fp16-amp", scheduler=True, bad_steps=(3,), steps=5, bad_value=math.nan),
}


@pytest.fixture(scope="module")
def diagnosed(module_servers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, list]]:
    folder = tmp_path_factory.mktemp("runs")
    url, waiter, release = scraping_prometheus(module_servers, folder / "targets", name="record-vs-prom")
    out = {}
    try:
        for name, cell in RUNS.items():
            record = folder / f"{name}.sqlite"
            run_cell(cell, watch=True, after_step=waiter(name), record=str(record), run=name, port=0)
            out[name] = (monitor.diagnose(str(record)), monitor.diagnose(url, run=name))
    finally:
        release()
    return out


def signature(findings: list) -> set[tuple[str, str, int | None]]:
    return {(f.code, f.severity, f.first_step) for f in findings}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_same_diagnosis_from_record_and_prometheus(diagnosed, name: str) -> None:
    from_record, from_prometheus = diagnosed[name]
    assert from_record, "every one of these runs has a finding"
    assert signature(from_prometheus) == signature(from_record)
    assert from_prometheus[0].code == from_record[0].code
