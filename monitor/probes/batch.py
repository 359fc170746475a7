"""DeviceBatch: per-tensor statistics computed with fused foreach kernels, fetched once.

Tensors are grouped by (device, dtype) and reduced with `torch._foreach_norm` (one kernel launch
per group and chunk instead of one per tensor). Every result stays on its device as float32 until
`fetch()`, which concatenates per device and copies to the host once per device: the only GPU
synchronisation of a sampled step. Nothing here writes to the input tensors. `host_reads()` counts
every read of a result on the host through this module (tests prove unsampled steps make none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from .packed import Pack, pack

__all__ = ["STATS", "DeviceBatch", "host_reads"]

# Temporaries for the non-finite count are made chunk by chunk to bound the extra memory.
_CHUNK_ELEMENTS = 1 << 26
_TEMPORARIES = {"nonzero", "nonzero_exact", "nonzero_positive", "nonfinite"}  # stats that may copy their input

_host_reads = 0


def host_reads() -> int:
    """Device-to-host reads made by this module since import (one per device per `fetch()`, plus the
    CPU-only reads of `nonzero_positive`); on the CPU they are where a GPU would synchronise."""
    return _host_reads


def _count_host_read() -> None:
    global _host_reads
    _host_reads += 1


def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(ts, 2, dtype=torch.float32))


def _abs_sum(ts: list[torch.Tensor]) -> torch.Tensor:
    """Sum of |x| (the L1 norm): the sum itself for non-negative tensors."""
    return torch.stack(torch._foreach_norm(ts, 1, dtype=torch.float32))


def _count(ts: list[torch.Tensor]) -> torch.Tensor:
    """Exact non-zero counts, converted once (a `.to()` per tensor doubles the cost of 10,000 small ones)."""
    return torch.stack([torch.count_nonzero(t) for t in ts]).to(torch.float32)


def _nonzero(ts: list[torch.Tensor]) -> torch.Tensor:
    """Elements != 0 (NaN counts as non-zero). On CUDA `_foreach_norm` has fused kernels for L1, L2
    and inf only, so there |sign(x)| summed by the fused L1 norm counts them (NaN where x has a NaN;
    the sampler recounts those). Elsewhere `count_nonzero` is the fastest exact count (CPU: ~2x
    faster than an L0 norm)."""
    if ts[0].device.type == "cuda":
        return _nonzero_fused(ts)
    return _count(ts)


def _nonzero_fused(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(torch._foreach_sign(ts), 1, dtype=torch.float32))


def _nonzero_exact(ts: list[torch.Tensor]) -> torch.Tensor:
    return _count(ts)


def _nonzero_positive(ts: list[torch.Tensor]) -> torch.Tensor:
    """Elements != 0, fast where no element is 0 (Adam's `exp_avg_sq` nearly always): on the CPU one
    fused min-|x| pass over all tensors (faster than `count_nonzero`), and an exact count only for
    tensors whose min |x| is 0 or NaN. Exact for any tensor. CUDA: the fused count of `_nonzero`."""
    if ts[0].device.type == "cuda":
        return _nonzero_fused(ts)
    _count_host_read()
    # min |x| per tensor in one foreach call: > 0 exactly when no element is 0 (NaN falls to the exact count)
    mins = torch.stack(torch._foreach_norm(ts, float("-inf"))).tolist()
    out = torch.tensor([t.numel() for t in ts], dtype=torch.float32)
    recount = [i for i, m in enumerate(mins) if not m > 0]
    if recount:
        out[recount] = _count([ts[i] for i in recount])
    return out


def _nonfinite(ts: list[torch.Tensor]) -> torch.Tensor:
    # x - x is 0 for finite x and NaN for NaN/Inf, so its L0 norm counts the non-finite elements.
    return torch.stack(torch._foreach_norm(torch._foreach_sub(ts, ts), 0, dtype=torch.float32))


STATS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "norm": _norm,
    "abs_sum": _abs_sum,
    "nonzero": _nonzero,
    "nonzero_exact": _nonzero_exact,
    "nonzero_positive": _nonzero_positive,
    "nonfinite": _nonfinite,
}


def _chunks(ts: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    out: list[list[torch.Tensor]] = [[]]
    size = 0
    for t in ts:
        if out[-1] and size + t.numel() > _CHUNK_ELEMENTS:
            out.append([])
            size = 0
        out[-1].append(t)
        size += t.numel()
    return out


def _groups(tensors: Sequence[torch.Tensor | None]) -> list[tuple[torch.device, list[int]]]:
    """Positions of the non-empty floating-point tensors, by (device, dtype): one foreach call each."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if t is not None:
            groups[(t.device, t.dtype)].append(i)
    out = []
    for (device, dtype), positions in groups.items():
        if dtype.is_floating_point or dtype.is_complex:
            kept = [i for i in positions if tensors[i].numel()]  # type: ignore[union-attr]
            if kept:
                out.append((device, kept))
    return out


class DeviceBatch:
    """Accumulates named per-tensor statistics; `fetch()` returns {name: [float | None, ...]}.

    `add(name, tensors, stat)` takes a sequence where None stands for "no tensor" (e.g. a
    parameter without a gradient); the result keeps those positions as None.
    """

    def __init__(self) -> None:
        # device -> list of (name, positions, float32 result on that device)
        self._parts: dict[torch.device, list[tuple[str, list[int], torch.Tensor]]] = defaultdict(list)
        self._lengths: dict[str, int] = {}

    def add(self, name: str, tensors: Sequence[torch.Tensor | None], stat: str,
            packs: list[Pack] | None = None) -> None:
        """`stat` of each tensor. Small tensors are packed (probes/packed.py) unless `packs` are given:
        packs of some of these tensors made earlier (a copy taken before the update) or shared by
        several statistics of the same tensors; the others are reduced with foreach kernels."""
        reduce = STATS[stat]
        self._lengths[name] = len(tensors)
        with torch.no_grad():  # instead of a detach() per tensor: the cost of 10,000 tensors is per-tensor
            packs = pack(tensors) if packs is None else packs
            for p in packs:
                self._parts[p.flat.device].append((name, p.positions, p.stat(stat)))
            if packs:
                done = {i for p in packs for i in p.positions}
                tensors = [None if i in done else t for i, t in enumerate(tensors)]
            for device, positions in _groups(tensors):
                ts = [tensors[i] for i in positions]
                chunks = _chunks(ts) if stat in _TEMPORARIES else [ts]
                values = [reduce(chunk) for chunk in chunks]  # type: ignore[arg-type]
                self._parts[device].append((name, positions, values[0] if len(values) == 1 else torch.cat(values)))

    def add_scalar(self, name: str, value: torch.Tensor) -> None:
        """A 0-d tensor (e.g. the loss) fetched with the same transfer."""
        self._lengths[name] = 1
        v = value.detach().reshape(1).to(torch.float32)
        self._parts[v.device].append((name, [0], v))

    def add_values(self, name: str, values: torch.Tensor) -> None:
        """A 1-d tensor of values (e.g. input non-finite counts) fetched with the same transfer."""
        self._lengths[name] = values.numel()
        v = values.detach().reshape(-1).to(torch.float32)
        self._parts[v.device].append((name, list(range(v.numel())), v))

    def fetch(self) -> dict[str, list[float | None]]:
        out: dict[str, list[float | None]] = {n: [None] * k for n, k in self._lengths.items()}
        for parts in self._parts.values():
            _count_host_read()
            host = torch.cat([p[2] for p in parts]).cpu().tolist()
            offset = 0
            for name, positions, values in parts:
                for j, pos in enumerate(positions):
                    out[name][pos] = host[offset + j]
                offset += values.numel()
        self._parts.clear()
        return out
