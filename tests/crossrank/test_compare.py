"""Cross-rank rules over hand-built per-rank histories (no torch): which rank broke first, divergence."""

from __future__ import annotations

import dataclasses
import math

from monitor.crossrank import compare_ranks, rank_lines
from monitor.crossrank.divergence import RTOL
from monitor.history import History, LayerObs, RunInfo, StepObs
from monitor.sampler import ROOT


def rank_history(rank: int, steps: int = 5, *, nan_loss_at: int | None = None, skipped_at: int | None = None,
                 norms: dict[int, float] | None = None, bad_output_at: int | None = None) -> History:
    """A DDP rank: grad norm 1.0 (the all-reduced gradients: the same on every rank) unless `norms`."""
    obs, rows = [], []
    for s in range(1, steps + 1):
        loss = math.nan if s == nan_loss_at else 1.0 / s
        skipped = s == skipped_at
        obs.append(StepObs(step=s, sampled=not skipped, skipped=skipped, loss=loss,
                           grad_norm_total=None if skipped else (norms or {}).get(s, 1.0)))
        if s == bad_output_at:
            rows.append(LayerObs(step=s, layer=ROOT, activation_nonfinite=12))
    return History(run=RunInfo(run="ddp", rank=rank, world_size=2), steps=obs, layers=rows)


def codes(histories: list[History]) -> list[str]:
    return [f.code for f in compare_ranks(histories)]


def test_one_rank_first_names_that_rank_and_the_step() -> None:
    rank0 = rank_history(0, skipped_at=3)  # NaN gradients reached rank 0 through the all-reduce: a skip
    rank1 = rank_history(1, nan_loss_at=3, skipped_at=3)
    [f] = compare_ranks([rank0, rank1])
    assert (f.code, f.severity, f.first_step) == ("nonfinite_rank_first", "critical", 3)
    assert f.title.startswith("Rank 1 went non-finite first, at step 3, while rank 0 stayed finite")
    assert any(e.startswith("rank 1: loss = nan at step 3") for e in f.evidence)
    assert any("rank 0: finite at step 3 (loss 0.333333)" in e and "all-reduce" in e for e in f.evidence)
    assert rank_lines([rank0, rank1])[0] == "rank 1: first non-finite at step 3 (loss = nan) <- broke first"


def test_output_activation_counts_as_local() -> None:
    rank0 = rank_history(0, bad_output_at=4, nan_loss_at=4)
    rank1 = rank_history(1, bad_output_at=2, nan_loss_at=2)
    [f] = compare_ranks([rank0, rank1])
    assert f.code == "nonfinite_rank_first" and f.first_step == 2 and "Rank 1" in f.title


def test_all_ranks_at_once_is_numerics() -> None:
    [f] = compare_ranks([rank_history(0, nan_loss_at=2), rank_history(1, nan_loss_at=2)])
    assert (f.code, f.severity, f.first_step) == ("nonfinite_all_ranks", "warning", 2)
    assert "Every rank (0, 1)" in f.title


def test_healthy_ranks_and_single_rank_say_nothing() -> None:
    assert codes([rank_history(0), rank_history(1)]) == []
    assert codes([rank_history(1, nan_loss_at=2)]) == []  # one rank alone: nothing to compare
    assert rank_lines([rank_history(0)]) == ["rank 0: nothing non-finite seen"]


def test_divergence_after_agreement_names_the_odd_rank() -> None:
    hs = [rank_history(0), rank_history(1, norms={4: 1.001, 5: 1.002}), rank_history(2)]
    [f] = compare_ranks(hs)
    assert (f.code, f.severity, f.first_step) == ("grad_norm_rank_divergence", "critical", 4)
    assert "(rank 1 off the others)" in f.title
    assert f.evidence[0].startswith("step 4: rank 0 1, rank 1 1.001, rank 2 1")
    assert f.evidence[2] == "2 of 2 compared steps from step 4 on differ"


def test_divergence_needs_a_step_of_agreement_and_respects_the_tolerance() -> None:
    never_equal = {s: 2.0 for s in range(1, 6)}
    assert codes([rank_history(0), rank_history(1, norms=never_equal)]) == []  # not replicas
    tiny = {4: 1.0 + RTOL / 10}
    assert codes([rank_history(0), rank_history(1, norms=tiny)]) == []
    nan = {4: math.nan}  # non-finite norms are the non-finite rules' business
    assert codes([rank_history(0), rank_history(1, norms=nan)]) == []


def test_a_failing_rule_does_not_fail_the_comparison() -> None:
    broken = dataclasses.replace(rank_history(1), steps=[StepObs(step=1, grad_norm_total="x")])  # type: ignore[arg-type]
    assert isinstance(compare_ranks([rank_history(0), broken]), list)
