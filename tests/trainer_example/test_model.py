"""The VAE and its spconv subdivide block on the CPU (ConvAlgo.Native): forward, backward, fp16 conversion."""

from __future__ import annotations

import torch

from monitor.example.config import MODEL_PRESETS
from monitor.example.data import SyntheticVoxels
from monitor.example.model import SlatVAE
from monitor.example.sparse import SparseTensor, subdivide
from monitor.example.subdivide import ConvAlgo, SparseSubdivideBlock, conv_algo, spconv

TINY = MODEL_PRESETS["tiny"]


def _input(n: int = 40, c: int = 16, res: int = 8) -> SparseTensor:
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(res**3, generator=g)[:n]
    xyz = torch.stack([flat // res**2, (flat // res) % res, flat % res], 1)
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.long), xyz], 1).int()
    return SparseTensor(coords, torch.randn(n, c, generator=g), 1, res)


def test_algorithm_choice() -> None:
    assert conv_algo(native=True) == ConvAlgo.Native
    assert conv_algo(native=False) is None
    block = SparseSubdivideBlock(16, 8, 4, native=True)
    assert block.conv1.algo == ConvAlgo.Native and block.conv2.algo == ConvAlgo.Native


def test_native_submanifold_conv_matches_dense_conv3d() -> None:
    """spconv's CPU path against torch's dense conv3d on the scattered grid, read at the active sites."""
    x = _input()
    conv = spconv.SubMConv3d(16, 8, 3, indice_key="t", algo=ConvAlgo.Native)
    out = conv(spconv.SparseConvTensor(x.feats, x.coords, [8, 8, 8], 1)).features
    grid = torch.zeros(1, 16, 8, 8, 8)
    c = x.coords.long()
    grid[0, :, c[:, 1], c[:, 2], c[:, 3]] = x.feats.T
    weight = conv.weight.permute(0, 4, 1, 2, 3)  # spconv keeps [out, k, k, k, in]
    dense = torch.nn.functional.conv3d(grid, weight, conv.bias, padding=1)
    torch.testing.assert_close(out, dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T, atol=1e-4, rtol=1e-4)


def test_subdivide_block_forward_backward_native() -> None:
    x = _input()
    feats = x.feats.clone().requires_grad_()
    block = SparseSubdivideBlock(16, 8, 4, native=True)
    torch.nn.init.normal_(block.conv2.weight, std=0.1)  # zero-initialised; give conv1 a gradient path
    out = block(x.replace(feats))
    assert out.resolution == 16 and out.feats.shape == (8 * 40, 8)
    assert torch.equal(out.coords, subdivide(x).coords)
    out.feats.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_vae_shapes_and_fp16_conversion() -> None:
    data = SyntheticVoxels(TINY, seed=0, device=torch.device("cpu"))
    batch = data.batch(0)
    model = SlatVAE(TINY)
    model.convert_to_fp16(upsample=False)
    out = model(batch.x)
    n = batch.x.coords.shape[0]
    assert out.mean.shape == (n, TINY.latent_channels) and out.mean.dtype == torch.float32
    assert out.pred.feats.shape == (8 * n, 1 + TINY.attr_channels) and out.pred.feats.dtype == torch.float32
    assert out.pred.feats.shape[0] == batch.occupancy.shape[0] == batch.attrs.shape[0]
    for name, p in model.named_parameters():
        in_blocks = ".blocks." in name
        assert p.dtype == (torch.float16 if in_blocks else torch.float32), name
    encoder_out = model.encoder.out_layer.weight
    assert encoder_out.abs().sum() == 0  # zero-initialised, as TRELLIS


def test_synthetic_data_is_deterministic_and_sensible() -> None:
    a = SyntheticVoxels(TINY, seed=3, device=torch.device("cpu")).batch(1)
    b = SyntheticVoxels(TINY, seed=3, device=torch.device("cpu")).batch(1)
    c = SyntheticVoxels(TINY, seed=4, device=torch.device("cpu")).batch(1)
    assert torch.equal(a.x.coords, b.x.coords) and torch.equal(a.x.feats, b.x.feats)
    assert a.x.coords.shape != c.x.coords.shape or not torch.equal(a.x.coords, c.x.coords)
    assert 100 < a.x.coords.shape[0] < 1500  # "a few hundred voxels" per batch of 2
    assert set(a.occupancy.unique().tolist()) == {0.0, 1.0}
    assert set(a.x.coords[:, 0].unique().tolist()) == {0, 1}
    assert (a.x.coords[:, 1:] >= 0).all() and (a.x.coords[:, 1:] < TINY.resolution).all()
