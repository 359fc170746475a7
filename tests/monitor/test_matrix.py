"""The monitor's numbers on every real set-up, against ground truth computed in raw torch.

Each cell (precision x optimizer implementation, plus loop shapes) trains twice: unwatched, and
watched at every=1. The watched run must be bitwise identical, and what the monitor recorded - step
numbers, skipped steps, unscaled per-layer and global gradient norms before clipping, the norm after
clipping, each step's loss (NaN kept), non-finite gradient counts per layer - must equal what the
loop measured itself (tests/monitor/matrix.py).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from .matrix import IMPLS, OPTIMIZERS, PRECISIONS, SKIPPING, Cell, Truth, run_cell

BURST = (3, 4, 5)  # three consecutive bad batches: every one of them must be counted

MATRIX = [Cell(p, o, i, bad_steps=BURST if p in SKIPPING else ())
          for p, o, i in itertools.product(PRECISIONS, OPTIMIZERS, IMPLS)]
SHAPES = [
    Cell("fp32", clip=0.05),
    Cell("bf16-autocast", "adamw", "fused", clip=0.05),
    Cell("fp16-amp", clip=0.05, bad_steps=(4,)),
    Cell("fp16-amp", "adamw", "fused", clip=0.05, bad_steps=(4,)),
    Cell("inflat_all", clip=0.05, bad_steps=(4,)),
    Cell("fp32", micro_batches=3),
    Cell("fp16-amp", micro_batches=2, bad_steps=(4,)),
    Cell("inflat_all", micro_batches=2, bad_steps=(4, 5)),
    Cell("fp32", container_root=True),
    Cell("inflat_all", container_root=True, bad_steps=BURST),
    Cell("fp16-amp", "adam", "fused", container_root=True, bad_steps=(2, 6)),
    Cell("self-skip", container_root=True, bad_steps=(3, 4)),
    Cell("fp32", compiled=True),
    Cell("fp16-amp", scheduler=True, bad_steps=(3,)),
]


def close(a: float | None, b: float, rel: float = 1e-4) -> bool:
    if a is None:
        return False
    if not math.isfinite(b):
        return not math.isfinite(a)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def assert_identical(plain: Truth, seen: Truth) -> None:
    for name, p in plain.final.items():
        q = seen.final[name]
        assert p.dtype == q.dtype
        assert torch.equal(torch.isnan(p), torch.isnan(q)), name
        assert torch.equal(torch.nan_to_num(p), torch.nan_to_num(q)), name


def check_against_truth(cell: Cell, truth: Truth, w) -> None:
    h = w.history()
    assert w.counters.errors == 0
    assert w.counters.step == cell.steps
    assert [s.step for s in h.steps] == list(range(1, cell.steps + 1)), "one observation per step, in order"
    assert [s.step for s in h.steps if s.skipped] == truth.skipped
    assert w.counters.skipped_steps == len(truth.skipped)
    for s in h.steps:
        assert close(s.loss, truth.loss[s.step]), (s.step, s.loss, truth.loss[s.step])
        if s.skipped:
            assert s.skip_reason
            continue
        assert close(s.grad_norm_total, truth.global_norm[s.step]), (s.step, s.grad_norm_total,
                                                                     truth.global_norm[s.step])
        if s.step in truth.applied_norm:
            assert close(s.grad_norm_applied, truth.applied_norm[s.step]), (s.step, s.grad_norm_applied,
                                                                           truth.applied_norm[s.step])
        rows = {r.layer: r for r in h.layer_rows(s.step) if r.param_norm is not None and not r.layer.startswith("[")}
        assert set(rows) == set(truth.layer_norm[s.step])
        for layer, norm in truth.layer_norm[s.step].items():
            assert close(rows[layer].grad_norm, norm), (s.step, layer, rows[layer].grad_norm, norm)
            expected = truth.grad_nonfinite[s.step][layer]
            if cell.clip is None:
                assert rows[layer].grad_nonfinite == expected, (s.step, layer)
            else:  # counts are of the clipped gradient; which layers are non-finite is decided before
                assert bool(rows[layer].grad_nonfinite) == bool(expected), (s.step, layer)


@pytest.mark.parametrize("cell", MATRIX + SHAPES, ids=lambda c: c.id)
def test_monitor_matches_raw_torch(cell: Cell) -> None:
    plain, _ = run_cell(cell, watch=False)
    seen, w = run_cell(cell, watch=True)
    assert_identical(plain, seen)
    check_against_truth(cell, seen, w)
