"""Where this process sits in a multi-process job: rank, local rank, world size, run id, restart count.

Read from an initialised `torch.distributed` process group when there is one, else from the variables
torchrun (torch.distributed.elastic) sets for every worker: RANK, LOCAL_RANK, WORLD_SIZE,
TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT. A plain `python train.py` is rank 0 of 1.
Nothing here runs a collective.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError
from .record.files import check_argument

__all__ = ["BASE_PORT", "DistInfo", "default_port", "detect", "record_path"]

BASE_PORT = 9108  # rank with LOCAL_RANK k serves on BASE_PORT + k by default


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text.strip() else default
    except ValueError:
        raise ConfigError(f"watch(): environment variable {name} must be an integer, got {text!r}") from None


@dataclass(frozen=True)
class DistInfo:
    """`run_id`: torchrun's rendezvous id ("" when not under torchrun, or when it is the default "none")."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    run_id: str = ""
    restart_count: int = 0


def detect(rank: int | None = None) -> DistInfo:
    """This process's place in the job; an explicit `rank` wins over everything detected."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if initialised else _env_int("WORLD_SIZE", 1)
    detected = torch.distributed.get_rank() if initialised else _env_int("RANK", 0)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return DistInfo(
        rank=int(rank) if rank is not None else detected,
        local_rank=_env_int("LOCAL_RANK", 0),
        world_size=max(world, 1),
        run_id="" if run_id == "none" else run_id,
        restart_count=_env_int("TORCHELASTIC_RESTART_COUNT", 0),
    )


def default_port(dist: DistInfo) -> int:
    """The default metrics port: one per rank on a node, so local ranks never compete for one port."""
    return BASE_PORT + dist.local_rank


def record_path(record: str | os.PathLike[str] | None, dist: DistInfo) -> str | None:
    """The record path of this rank: `{rank}` in the path is replaced by the rank; otherwise, in a job of
    several processes, `.rank<N>` goes before the suffix (`runs/a.sqlite` -> `runs/a.rank1.sqlite`), so
    ranks never share a file. A single process keeps the path as given."""
    if record is None:
        return None
    text = check_argument(record)  # ConfigError naming `record` for anything but a non-empty path
    if "{rank}" in text:
        return text.replace("{rank}", str(dist.rank))
    if re.search(r"\{[^}]*\}", text):
        raise ConfigError(f"watch(): record={text!r} has a placeholder other than {{rank}}")
    if dist.world_size <= 1:
        return text
    p = Path(text)
    return str(p.with_name(f"{p.stem}.rank{dist.rank}{p.suffix}"))
