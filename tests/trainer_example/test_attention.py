"""Windowed sparse attention against a dense reference, batch isolation, and fp16 logit overflow."""

from __future__ import annotations

import pytest
import torch

from monitor.example.attention import SparseWindowAttention, WindowAttentionCore, partition_windows
from monitor.example.sparse import SparseTensor

RES, WINDOW, HEADS, DIM = 16, 8, 2, 4


def _coords(n_per_item: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = []
    for b in range(batch):
        flat = torch.randperm(RES**3, generator=g)[:n_per_item]
        xyz = torch.stack([flat // RES**2, (flat // RES) % RES, flat % RES], 1)
        items.append(torch.cat([torch.full((n_per_item, 1), b), xyz], 1))
    return torch.cat(items).int()


def _dense_reference(qkv: torch.Tensor, coords: torch.Tensor, shift: int) -> torch.Tensor:
    """Full attention over all voxels with a mask: same batch item and same shifted window."""
    key = torch.cat([coords[:, :1].long(), (coords[:, 1:].long() + shift) // WINDOW], 1)
    allowed = (key[:, None, :] == key[None, :, :]).all(-1)
    q, k, v = (qkv[:, i].transpose(0, 1) for i in range(3))  # [H, N, D]
    logits = q @ k.transpose(-1, -2) / DIM**0.5
    out = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1) @ v
    return out.transpose(0, 1).reshape(len(coords), -1)


@pytest.mark.parametrize("shift", [0, 4])
def test_matches_dense_reference(shift: int) -> None:
    coords = _coords(60, batch=2)
    qkv = torch.randn(len(coords), 3, HEADS, DIM, generator=torch.Generator().manual_seed(1))
    part = partition_windows(coords, RES, WINDOW, shift)
    out = WindowAttentionCore()(qkv, part)
    torch.testing.assert_close(out, _dense_reference(qkv, coords, shift), atol=1e-5, rtol=1e-5)


def test_partition_covers_every_voxel_once_and_never_mixes_items() -> None:
    coords = _coords(80, batch=3)
    part = partition_windows(coords, RES, WINDOW, 4)
    rows = part.index[part.valid]
    assert sorted(rows.tolist()) == list(range(len(coords)))
    for w in range(part.index.shape[0]):
        items = coords[part.index[w][part.valid[w]], 0].unique()
        assert len(items) == 1


def test_no_cross_batch_leakage() -> None:
    """Two items with identical coordinates: changing item 1's features leaves item 0's output exactly."""
    one = _coords(50, batch=1)
    coords = torch.cat([one, one.clone().index_fill_(1, torch.tensor([0]), 1)])
    attn = SparseWindowAttention(HEADS * DIM, HEADS, WINDOW, shift=4)
    feats = torch.randn(len(coords), HEADS * DIM, generator=torch.Generator().manual_seed(2))
    x = SparseTensor(coords, feats, 2, RES)
    before = attn(x, feats)
    changed = feats.clone()
    changed[50:] += 10.0
    after = attn(x.replace(changed), changed)
    assert torch.equal(before[:50], after[:50])
    assert not torch.allclose(before[50:], after[50:])
    alone = attn(SparseTensor(one, feats[:50], 1, RES), feats[:50])
    torch.testing.assert_close(alone, before[:50], atol=1e-6, rtol=1e-5)


def test_logit_gain_overflows_fp16_but_not_fp32() -> None:
    coords = _coords(40, batch=1)
    qkv = torch.randn(len(coords), 3, HEADS, DIM, generator=torch.Generator().manual_seed(3))
    part = partition_windows(coords, RES, WINDOW, 0)
    core = WindowAttentionCore()
    core.logit_gain = 1e6
    assert torch.isfinite(core(qkv, part)).all()
    assert not torch.isfinite(core(qkv.half(), part)).all()
