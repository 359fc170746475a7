"""Watched runs through the Python API: the monitor sees the trainer's faults, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer_example.loop import run

from .helpers import tiny


def test_eps_underflow_is_diagnosed_at_step_1(tmp_path: Path) -> None:
    result = run(tiny(fault="eps-underflow", watch=True, record=str(tmp_path / "r.sqlite")))
    assert result.findings is not None
    hits = [f for f in result.findings if f.code == "adam_eps_underflow"]
    assert hits and hits[0].first_step in (0, 1)
    assert any(fix.kind == "eps" for fix in hits[0].fixes)


def test_endpoint_url_when_a_port_is_asked_for() -> None:
    result = run(tiny(precision="fp32", steps=1, watch=True, port=0))
    assert result.url is not None and result.url.startswith("http://127.0.0.1:")
    assert result.findings is not None  # Watcher.findings() before close, no record


@pytest.mark.parametrize("precision", ["fp32", "inflat_all"])
def test_watching_does_not_change_training(precision: str) -> None:
    plain = run(tiny(precision=precision, steps=3))
    watched = run(tiny(precision=precision, steps=3, watch=True))
    assert watched.losses == plain.losses
    for (name, a), (_, b) in zip(plain.model.named_parameters(), watched.model.named_parameters(), strict=True):
        assert a.dtype == b.dtype and bool((a == b).all()), name
