"""The triage page across ranks: per-rank records of one run found by name, which rank broke first."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import monitor
from monitor.dashboard.mdtext import escape
from monitor.dashboard.ranks import rank_records
from tests.models import Fp16Blocks, batch


def _rank_record(path: Path, rank: int, nan_at: int | None) -> None:
    """Three fp32 AdamW steps of one rank; `nan_at`: that step's batch holds a NaN (a bad sample)."""
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with monitor.watch(model, opt, port=None, record=path, run="two", rank=rank) as w:
        for step in (1, 2, 3):
            x, y = batch(step)
            if step == nan_at:
                x[0, 0] = math.nan
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()


def test_rank_records_finds_the_siblings(tmp_path: Path) -> None:
    for name in ("a.rank0.sqlite", "a.rank10.sqlite", "a.rank2.sqlite", "b.rank1.sqlite", "a.sqlite"):
        (tmp_path / name).touch()
    assert [p.name for p in rank_records(str(tmp_path / "a.rank2.sqlite"))] == [
        "a.rank0.sqlite", "a.rank2.sqlite", "a.rank10.sqlite"]
    assert rank_records(str(tmp_path / "a.sqlite")) == []


def test_page_shows_which_rank_broke_first(app_page, tmp_path: Path) -> None:
    _rank_record(tmp_path / "run.rank0.sqlite", 0, None)
    _rank_record(tmp_path / "run.rank1.sqlite", 1, 2)
    at = app_page(query={"record": str(tmp_path / "run.rank0.sqlite")})  # the healthy rank's own link
    assert "Across ranks (2)" in [h.value for h in at.header]
    shown = "\n".join(t.value for t in at.text)
    assert "• rank 1: first non-finite at step 2 (loss = nan) <- broke first" in shown
    assert any(e.value.startswith(escape("nonfinite_rank_first: Rank 1 went non-finite first, at step 2"))
               for e in at.error), [e.value for e in at.error]


def test_single_rank_record_has_no_ranks_section(app_page, tmp_path: Path) -> None:
    _rank_record(tmp_path / "solo.sqlite", 0, None)
    at = app_page(query={"record": str(tmp_path / "solo.sqlite")})
    assert not [h.value for h in at.header if h.value.startswith("Across ranks")]
