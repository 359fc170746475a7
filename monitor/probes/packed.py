"""Many small tensors packed into one flat buffer per (device, dtype): statistics per segment.

A foreach kernel over 10,000 tensors still pays ~1 us of dispatch per tensor and statistic and makes
one result tensor (a Python object, tracked by the garbage collector) per input. Tensors of at most
`SMALL` elements are instead copied once into a flat buffer (`flatten_dense_tensors`: one C++ call)
and each statistic is one `index_add_` over the segment index: a handful of kernels and Python
objects per statistic whatever the number of tensors. Large tensors keep the foreach path (copying
them would add a pass over their memory), and so do groups with fewer than `MIN_TENSORS` small
tensors, where packing does not pay. Sums are accumulated in float64 (counts are exact).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch._utils import _flatten_dense_tensors

__all__ = ["MIN_TENSORS", "SMALL", "Pack", "minus", "pack"]

SMALL = 1 << 12
MIN_TENSORS = 32
_PACK_ELEMENTS = 1 << 22  # bounds one pack's buffer and its float64 temporary (32 MiB)
_SEGMENTS: OrderedDict[tuple[torch.device, tuple[int, ...]], torch.Tensor] = OrderedDict()
_SEGMENTS_KEPT = 16


def _segments(device: torch.device, lengths: tuple[int, ...]) -> torch.Tensor:
    """Segment index of each element (0 x lengths[0], 1 x lengths[1], ...) on `device`, cached by layout:
    the same parameters give the same layout every sampled step, so no host-to-device copy after the
    first (on CUDA that first one is asynchronous, from pinned memory: no sync)."""
    key = (device, lengths)
    seg = _SEGMENTS.get(key)
    if seg is None:
        host = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        if device.type == "cuda":
            host = host.pin_memory()
        seg = _SEGMENTS[key] = host.to(device, non_blocking=True)
        if len(_SEGMENTS) > _SEGMENTS_KEPT:
            _SEGMENTS.popitem(last=False)
    else:
        _SEGMENTS.move_to_end(key)
    return seg


@dataclass(frozen=True)
class Pack:
    """Tensors at list `positions`, their elements concatenated in `flat`; `segments[j]` is the index
    (into `positions`) of the tensor element j came from."""

    positions: list[int]
    flat: torch.Tensor
    segments: torch.Tensor

    def minus(self, other: Pack) -> Pack:
        """Element-wise self - other, for a pack of the same tensors taken at another time."""
        return Pack(self.positions, self.flat - other.flat, self.segments)

    def _sum(self, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(len(self.positions), dtype=dtype, device=self.flat.device)
        return out.index_add_(0, self.segments, values.to(dtype))

    def stat(self, stat: str) -> torch.Tensor:
        """`stat` of each packed tensor (float32, on the pack's device), as probes/batch.py STATS define it."""
        if stat == "norm":
            return self._sum(self.flat.double().square(), torch.float64).sqrt().float()
        if stat == "abs_sum":
            return self._sum(self.flat.double().abs(), torch.float64).float()
        if stat == "nonfinite":
            return self._sum(~torch.isfinite(self.flat), torch.float32)
        if stat in ("nonzero", "nonzero_exact", "nonzero_positive"):
            return self._sum(self.flat != 0, torch.float32)  # exact (NaN counts as non-zero)
        raise ValueError(f"Pack.stat: no packed form of {stat!r}")


def _small_groups(tensors: Sequence[torch.Tensor | None]) -> list[tuple[torch.device, list[int], list[int]]]:
    """(device, positions, element counts) of the small floating-point tensors, per (device, dtype)."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[int], list[int]]] = {}
    for i, t in enumerate(tensors):  # the one loop over every tensor: kept minimal
        if t is not None:
            n = t.numel()
            if 0 < n <= SMALL:
                group = groups.get((t.device, t.dtype))
                if group is None:
                    group = groups[(t.device, t.dtype)] = ([], [])
                group[0].append(i)
                group[1].append(n)
    return [(device, positions, sizes) for (device, dtype), (positions, sizes) in groups.items()
            if dtype.is_floating_point and len(positions) >= MIN_TENSORS]


def _runs(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive tensors holding at most _PACK_ELEMENTS elements each (or one tensor)."""
    if sum(sizes) <= _PACK_ELEMENTS:
        return [(0, len(sizes))]
    runs, start, total = [], 0, 0
    for i, n in enumerate(sizes):
        if total + n > _PACK_ELEMENTS and i > start:
            runs.append((start, i))
            start, total = i, 0
        total += n
    return [*runs, (start, len(sizes))]


def pack(tensors: Sequence[torch.Tensor | None]) -> list[Pack]:
    """Packs of the small floating-point tensors of `tensors` (None and the rest left out), each of at
    most ~4M elements. Copies their values as they are now (no autograd)."""
    out = []
    with torch.no_grad():
        for device, positions, sizes in _small_groups(tensors):
            for start, end in _runs(sizes):
                chunk = positions[start:end]
                flat = _flatten_dense_tensors([tensors[i] for i in chunk])
                out.append(Pack(chunk, flat, _segments(device, tuple(sizes[start:end]))))
    return out


def minus(after: list[Pack], before: list[Pack]) -> list[Pack]:
    """The change of packed tensors (after - before) where both packs hold the same tensors; positions
    whose layout changed in between are left out (measured as missing)."""
    return [a.minus(b) for a, b in zip(after, before) if a.positions == b.positions and a.flat.shape == b.flat.shape]
