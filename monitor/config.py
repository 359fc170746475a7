"""Validation of `watch()` arguments: each error names the argument and what was expected."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["DEFAULT_PORT", "GUARD_MODES", "DefaultPort", "check_args", "check_guard", "default_run"]

GUARD_MODES = ("warn", "skip", "stop")


class DefaultPort(int):
    """The type of `watch()`'s default `port`: "not given by the caller". Resolved per rank (9108 +
    LOCAL_RANK) and, when that port is busy, replaced by a free one with a log line; an explicit
    `port=9108` (a plain int) still fails loudly when busy."""

    def __repr__(self) -> str:
        return "9108 + LOCAL_RANK"


DEFAULT_PORT = DefaultPort(9108)


def _fail(arg: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"watch(): {arg} must be {expected}, got {got!r}")


def check_args(model: Any, optimizer: Any, scaler: Any, loss_scale: Any, every: Any, port: Any,
               host: Any, max_layers: Any, export_layers: Any = "auto") -> None:
    if not isinstance(model, nn.Module):
        raise _fail("model", "a torch.nn.Module", type(model).__name__)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise _fail("optimizer", "a torch.optim.Optimizer", type(optimizer).__name__)
    if scaler is not None and not all(callable(getattr(scaler, a, None)) for a in ("update", "get_scale",
                                                                                    "is_enabled")):
        raise _fail("scaler", "a torch.amp.GradScaler or None (for a hand-made scale use loss_scale=)",
                    type(scaler).__name__)
    if scaler is not None and loss_scale is not None:
        raise ConfigError("watch(): pass scaler= (a GradScaler) or loss_scale= (a callable), not both")
    if loss_scale is not None and not callable(loss_scale):
        raise _fail("loss_scale", "a callable returning the current loss scale, e.g. "
                    "lambda: 2 ** trainer.log_scale", type(loss_scale).__name__)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise _fail("every", "an integer >= 1 (sample every N optimizer steps)", every)
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise _fail("port", "an integer 0-65535 (0: any free port) or None (no HTTP endpoint)", port)
    if not isinstance(host, str) or not host:
        raise _fail("host", "an address to bind, e.g. '127.0.0.1'", host)
    if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1:
        raise _fail("max_layers", "an integer >= 1", max_layers)
    if export_layers not in ("auto", "full", "grouped"):
        raise _fail("export_layers", "'auto' (grouped by block above 8 ranks), 'full' or 'grouped'", export_layers)
    _check_params(model, optimizer)


def _check_sharded(model: nn.Module) -> None:
    """FSDP2 (`fully_shard`) makes every parameter a DTensor holding one shard: norms of the local shard
    are not the layer's norms, and summing them needs a reduction across the shard group. Refuse
    rather than export numbers that are silently wrong."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return
    sharded = [n for n, p in model.named_parameters() if isinstance(p, DTensor)]
    if sharded:
        raise ConfigError(
            f"watch(): model has {len(sharded)} DTensor parameters (FSDP2 fully_shard or tensor parallel, e.g. "
            f"{sharded[0]!r}); sharded parameters are not supported yet - per-layer norms of local shards would "
            "be wrong. Watch an unsharded (DDP or single-process) run, or pass a model without DTensor "
            "parameters")


def check_guard(on_nonfinite: Any, max_skips: Any, checkpoint: Any) -> None:
    """The guard's arguments: a mode, a skip limit only for "skip", a checkpoint only when it can stop."""
    if on_nonfinite not in GUARD_MODES:
        raise _fail("on_nonfinite", "one of 'warn' (only report), 'skip' (keep non-finite steps out of the "
                    "weights) or 'stop' (raise monitor.GuardStop)", on_nonfinite)
    if max_skips is not None:
        if isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 1:
            raise _fail("max_skips", "an integer >= 1 (consecutive skipped steps before the guard stops) or "
                        "None (no limit)", max_skips)
        if on_nonfinite != "skip":
            raise ConfigError(f"watch(): max_skips only applies to on_nonfinite='skip', got "
                              f"on_nonfinite={on_nonfinite!r}")
    if checkpoint is not None:
        if not callable(checkpoint):
            raise _fail("checkpoint", "a callable taking the last good state (a dict with step, model, "
                        "optimizer) or None", type(checkpoint).__name__)
        if on_nonfinite == "warn":
            raise ConfigError("watch(): checkpoint= is called when the guard stops; pass on_nonfinite='stop' "
                              "or 'skip' with max_skips=N, got on_nonfinite='warn'")


def _check_params(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer must update the model's parameters, or an fp32 master copy of them (same
    element count, as TRELLIS's flattened `inflat_all` master)."""
    _check_sharded(model)
    model_ids = {id(p) for p in model.parameters()}
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    if not opt_params:
        raise ConfigError("watch(): optimizer has no parameters")
    if any(id(p) in model_ids for p in opt_params):
        return
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    held = sum(p.numel() for p in opt_params)
    if held != trainable:
        raise ConfigError(
            f"watch(): optimizer's parameters are not model's ({held} elements vs {trainable} trainable in "
            "the model). Pass the optimizer that trains this model; an fp32 master copy is accepted when "
            "it holds exactly the model's trainable elements.")


def default_run(run: str | None, now: Callable[[], float] = time.time, run_id: str = "") -> str:
    """`run`, else $SLATMON_RUN, else torchrun's rendezvous id (`run_id`: the same on every rank, so all
    ranks of a job share one run label), else the local start time (pass `run=` in a multi-node job
    launched without a rendezvous id: the ranks' clocks may not agree on the second)."""
    if run:
        return str(run)
    if os.environ.get("SLATMON_RUN"):
        return os.environ["SLATMON_RUN"]
    if run_id:
        return f"torchrun-{run_id}"
    return time.strftime("run-%Y%m%d-%H%M%S", time.localtime(now()))
