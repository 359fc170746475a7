"""DeviceBatch statistics against plain per-tensor torch."""

from __future__ import annotations

import math

import torch

from monitor.probes import DeviceBatch
from monitor.probes import batch as probes


def tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, generator=g)
    a[::7] = 0
    b = torch.randn(30, 20, generator=g).half()
    b[0, :5] = 0
    c = torch.randn(50, generator=g).bfloat16()
    return [a, b, c]


def test_stats_match_torch():
    ts = tensors()
    bad = ts[0].clone()
    bad[3], bad[9], bad[11] = float("nan"), float("inf"), -float("inf")
    b = DeviceBatch()
    b.add("norm", [*ts, None], "norm")
    b.add("nonzero", ts, "nonzero")
    b.add("nonfinite", [bad, ts[1]], "nonfinite")
    b.add_scalar("loss", torch.tensor(2.5))
    v = b.fetch()
    for got, t in zip(v["norm"], ts):
        assert math.isclose(got, float(t.float().norm()), rel_tol=1e-3)
    assert v["norm"][3] is None
    assert v["nonzero"] == [float(torch.count_nonzero(t)) for t in ts]
    assert v["nonfinite"] == [3.0, 0.0]
    assert v["loss"] == [2.5]


def test_fused_nonzero_count_equals_exact_on_finite_tensors():
    ts = tensors()
    assert [float(x) for x in probes._nonzero_fused(ts)] == [float(x) for x in probes._nonzero_exact(ts)]


def test_chunking_bounds_temporaries_and_keeps_order(monkeypatch):
    monkeypatch.setattr(probes, "_CHUNK_ELEMENTS", 64)
    ts = [torch.full((40,), float(i)) for i in range(5)]
    ts[2][0] = float("nan")
    b = DeviceBatch()
    b.add("nonfinite", ts, "nonfinite")
    b.add("norm", ts, "norm")
    v = b.fetch()
    assert v["nonfinite"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert math.isnan(v["norm"][2])
    expected = [0.0, 40**0.5, 3 * 40**0.5, 4 * 40**0.5]
    got = [x for x in v["norm"] if math.isfinite(x)]
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(got, expected, strict=True))


def test_nonzero_positive_is_exact_for_any_tensor():
    g = torch.Generator().manual_seed(2)
    positive = torch.rand(500, generator=g) + 0.1
    with_zeros = positive.clone()
    with_zeros[::9] = 0
    with_nan = positive.clone()
    with_nan[4] = float("nan")
    signed = torch.randn(300, generator=g)
    signed[7] = 0
    neg_zero = -torch.zeros(10)
    ts = [positive, with_zeros, with_nan, signed, neg_zero, positive.half()]
    b = DeviceBatch()
    b.add("n", ts, "nonzero_positive")
    assert b.fetch()["n"] == [float(torch.count_nonzero(t)) for t in ts]


def test_host_reads_counts_one_read_per_fetch():
    before = probes.host_reads()
    b = DeviceBatch()
    b.add("norm", tensors(), "norm")
    b.add_scalar("loss", torch.tensor(1.0))
    assert probes.host_reads() == before  # queued on the device, nothing read yet
    b.fetch()
    assert probes.host_reads() == before + 1
