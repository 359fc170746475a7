"""Naming a call's input tensors and checking them on the device (monitor/values.py), against raw torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from monitor.values import data_slots, input_slots, nonfinite_counts, nonfinite_sums


@dataclass
class Sparse:  # a sparse tensor's shape: coords + feats
    coords: torch.Tensor
    feats: torch.Tensor


@dataclass
class Batch:
    image: torch.Tensor
    label: int


def test_inputs_are_named_as_passed() -> None:
    a, b, c, d = (torch.randn(2) for _ in range(4))
    sp = Sparse(torch.zeros(2, 4, dtype=torch.int32), torch.randn(2, 3))
    named = input_slots((a, [b, {"x": c}], sp, Batch(d, 3), torch.arange(3)), {"cond": a.half()})
    assert [n for n, _ in named] == ["args[0]", "args[1][0]", "args[1][1]['x']", "args[2].feats", "args[3].image",
                                     "kwargs['cond']"]
    assert named[3][1] is sp.feats


def test_data_excludes_what_the_model_computed() -> None:
    w = torch.ones(2, requires_grad=True)
    x = torch.randn(2)
    assert [n for n, _ in data_slots((x, x * w), {})] == ["args[0]"]


def test_counts_and_sums_against_raw_torch() -> None:
    x = torch.randn(100)
    x[[3, 50]] = torch.tensor([math.nan, -math.inf])
    y = torch.randn(7, 3).half()
    y[0, 0] = math.inf
    clean = torch.randn(10, dtype=torch.float64) * 1e300  # finite; its sum overflows float32 (and float64)
    counts = nonfinite_counts([x, y, clean])
    assert counts.tolist() == [int((~torch.isfinite(t)).sum()) for t in (x, y, clean)] == [2, 1, 0]
    sums = nonfinite_sums([x, y, clean, torch.ones(4)]).tolist()
    assert [math.isfinite(s) for s in sums] == [False, False, True, True]
