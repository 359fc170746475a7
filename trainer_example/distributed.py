"""DDP under torchrun: process group, device per local rank, the DDP wrapper, rank-prefixed output.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op and the trainer is the plain
single-process one. Under `torchrun --nproc_per_node N -m trainer_example.train`: gloo on the CPU, nccl
on GPUs (one per LOCAL_RANK). Each rank reads its own share of the synthetic batches (batch index
`(step - 1) * world_size + rank`), so a single-process run sees exactly the batches it saw before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Dist", "start"]


@dataclass(frozen=True)
class Dist:
    """This process in the job. `owned`: this module created the process group (and destroys it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def prefix(self) -> str:
        """`[rank 1] ` in a job of several processes, "" otherwise: torchrun interleaves the ranks' output."""
        return f"[rank {self.rank}] " if self.active else ""

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank; the CPU stays the CPU."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.active else device

    def batch_index(self, step: int) -> int:
        return (step - 1) * self.world_size + self.rank

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`DistributedDataParallel(model)`: gradients are all-reduced during backward, so they are
        identical on every rank by the time `optimizer.step()` (and the monitor) reads them."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def start(device: torch.device) -> Dist:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    owned = not torch.distributed.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                local_rank=local, owned=owned)
