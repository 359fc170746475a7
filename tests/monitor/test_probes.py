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


def test_many_small_tensors_are_packed_and_match_torch():
    """Enough small tensors of one dtype to take the packed path (probes/packed.py), mixed with large ones,
    None and another dtype: every statistic equals the per-tensor torch value, in list order."""
    from monitor.probes.packed import MIN_TENSORS, SMALL, pack

    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 60, (2 * MIN_TENSORS,), generator=g).tolist()
    ts: list[torch.Tensor | None] = [torch.randn(n, generator=g) for n in sizes]
    ts[1][0], ts[4][2], ts[7][:] = float("nan"), float("inf"), 0.0
    ts[9] = None
    ts += [torch.randn(SMALL + 1, generator=g), torch.randn(3, generator=g).half()]
    small = {i for i, t in enumerate(ts[:2 * MIN_TENSORS]) if t is not None}
    assert {p for pk in pack(ts) for p in pk.positions} == small
    b = DeviceBatch()
    for stat in ("norm", "nonzero", "nonzero_positive", "nonfinite"):
        b.add(stat, ts, stat)
    v = b.fetch()
    for i, t in enumerate(ts):
        if t is None:
            assert all(v[s][i] is None for s in v)
            continue
        norm = float(t.double().norm())
        assert (math.isnan(norm) and math.isnan(v["norm"][i])) or math.isclose(v["norm"][i], norm, rel_tol=1e-6), i
        assert v["nonzero"][i] == v["nonzero_positive"][i] == float(torch.count_nonzero(t)), i
        assert v["nonfinite"][i] == float((~torch.isfinite(t)).sum()), i
