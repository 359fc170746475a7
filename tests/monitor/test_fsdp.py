"""FSDP2 (`fully_shard`, DTensor parameters) under a real torchrun job: watch() refuses it clearly.

Norms of local shards are not the layers' norms; until the monitor reduces sums of squares across the
shard group, watch() raises ConfigError at attach time - never silently wrong numbers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.trainer_example.torchrun import job

SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
import monitor

dist.init_process_group("gloo")
model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
for layer in model:
    fully_shard(layer)
fully_shard(model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
result = {"rank": dist.get_rank()}
hooks = lambda: len(opt._optimizer_step_pre_hooks) + len(model._forward_pre_hooks)  # FSDP2 has its own
before = hooks()
try:
    monitor.watch(model, opt, port=None)
    result["error"] = None
except monitor.ConfigError as exc:
    result["error"] = str(exc)
result["hooks_added"] = hooks() - before
model(torch.randn(2, 8)).sum().backward()  # training goes on, unhooked
opt.step()
json.dump(result, open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_fully_shard_is_refused_at_watch_time(tmp_path: Path) -> None:
    script = tmp_path / "fsdp_watch.py"
    script.write_text(textwrap.dedent(SCRIPT))
    job(str(script), str(tmp_path), cwd=tmp_path)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["error"] is not None, "watch() accepted sharded parameters"
        assert "DTensor parameters (FSDP2 fully_shard" in result["error"]
        assert "'0.weight'" in result["error"] and "not supported yet" in result["error"]
        assert result["hooks_added"] == 0
