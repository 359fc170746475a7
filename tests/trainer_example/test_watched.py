"""Watched runs through the Python API: the monitor sees the trainer's faults, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monitor.example.loop import run

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


@pytest.mark.parametrize("precision,fault", [("fp32", "none"), ("inflat_all", "none"), ("amp", "none"),
                                            ("amp", "overflow"), ("fp16-naive", "eps-underflow")])
def test_watching_does_not_change_training(precision: str, fault: str) -> None:
    """Bitwise: the SLAT VAE in every precision mode, with GradScaler skips (amp + overflow) and NaNs."""
    plain = run(tiny(precision=precision, fault=fault, fault_step=2, steps=4))
    watched = run(tiny(precision=precision, fault=fault, fault_step=2, steps=4, watch=True))
    assert [s.skipped for s in watched.steps] == [s.skipped for s in plain.steps]
    got, want = torch.tensor(watched.losses), torch.tensor(plain.losses)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    if fault == "overflow":
        assert any(s.skipped for s in plain.steps)  # the GradScaler path really skipped steps
    for (name, a), (_, b) in zip(plain.model.named_parameters(), watched.model.named_parameters(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a.nan_to_num(), b.nan_to_num()), name
        assert torch.equal(a.isnan(), b.isnan()), name
