"""SparseTensor, subdivision and per-item GroupNorm (no spconv needed)."""

from __future__ import annotations

import pytest
import torch

from monitor.example.sparse import SparseTensor, group_norm, subdivide


def _tensor(n: int = 5, c: int = 4, batch: int = 2) -> SparseTensor:
    g = torch.Generator().manual_seed(0)
    coords = torch.cat([torch.randint(batch, (n, 1), generator=g), torch.randint(8, (n, 3), generator=g)], 1)
    return SparseTensor(coords.int(), torch.randn(n, c, generator=g), batch, 8)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="int32"):
        SparseTensor(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 2), 1, 8)
    with pytest.raises(ValueError, match="N = 3"):
        SparseTensor(torch.zeros(3, 4, dtype=torch.int32), torch.zeros(2, 2), 1, 8)


def test_subdivide_groups_eight_children_per_parent() -> None:
    x = _tensor()
    fine = subdivide(x)
    assert fine.resolution == 16 and fine.coords.shape == (40, 4)
    for i in range(5):
        children = fine.coords[8 * i : 8 * i + 8]
        assert (children[:, 0] == x.coords[i, 0]).all()
        assert ((children[:, 1:] // 2) == x.coords[i, 1:]).all()
        assert len({tuple(c.tolist()) for c in children}) == 8
        assert torch.equal(fine.feats[8 * i : 8 * i + 8], x.feats[i].expand(8, -1))


def test_group_norm_matches_torch_per_batch_item() -> None:
    x = _tensor(n=30, c=8)
    out = group_norm(x, num_groups=4)
    for b in range(2):
        rows = x.coords[:, 0] == b
        ref = torch.nn.functional.group_norm(x.feats[rows].T.unsqueeze(0), 4).squeeze(0).T
        torch.testing.assert_close(out[rows], ref, atol=1e-5, rtol=1e-5)
