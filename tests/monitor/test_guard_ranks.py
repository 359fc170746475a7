"""Two real gloo processes: only rank 1 sees a NaN batch; the guard makes both ranks skip that step."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.multiprocessing as mp

from .guard_ranks import worker
from .guard_runs import bitwise_equal, fp32_run, weights


@pytest.mark.parametrize("fused", [False, True])
def test_both_ranks_skip_the_step_only_rank1_saw_as_nan(tmp_path, fused, monkeypatch):
    # spawned children re-run the parent's __main__ file: after a Streamlit AppTest that is the triage page
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path), fused), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["errors"] == r1["errors"] == 0
    assert r0["skipped"] == r1["skipped"] == [(3, "nonfinite_grad")]
    assert bitwise_equal(r0["weights"], r1["weights"])
    never, _, _ = fp32_run(8, drop=[3], fused=fused)  # ground truth: one process that never saw step 3
    assert bitwise_equal(r0["weights"], weights(never))
    # rank 0's batch 3 was finite: applied alone, its weights would differ from the run without it
    alone, _, _ = fp32_run(8, fused=fused)
    assert not bitwise_equal(r0["weights"], weights(alone))
