"""Validation of `watch()` arguments: each error names the argument and what was expected."""

from __future__ import annotations

import difflib
import os
import secrets
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .record.files import check_argument

__all__ = ["DEFAULT_PORT", "GUARD_MODES", "DefaultPort", "check_args", "check_guard", "check_option_names",
           "check_save_bad_batch",
           "check_options", "check_watch", "default_run"]

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    if not _is_int(every) or every < 1:
        raise _fail("every", "an integer >= 1 (sample every N optimizer steps)", every)
    if port is not None and (not _is_int(port) or not 0 <= port <= 65535):
        raise _fail("port", "an integer 0-65535 (0: any free port) or None (no HTTP endpoint)", port)
    if not isinstance(host, str) or not host:
        raise _fail("host", "an address to bind, e.g. '127.0.0.1'", host)
    if not _is_int(max_layers) or max_layers < 1:
        raise _fail("max_layers", "an integer >= 1", max_layers)
    if not isinstance(export_layers, str) or export_layers not in ("auto", "full", "grouped"):
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
    if not isinstance(on_nonfinite, str) or on_nonfinite not in GUARD_MODES:
        raise _fail("on_nonfinite", "one of 'warn' (only report), 'skip' (keep non-finite steps out of the "
                    "weights) or 'stop' (raise monitor.GuardStop)", on_nonfinite)
    if max_skips is not None:
        if not _is_int(max_skips) or max_skips < 1:
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


def check_watch(model: Any, optimizer: Any, o: Mapping[str, Any]) -> None:
    """Every argument of `watch()` (`o`: its keyword options, all of them), before anything is created."""
    check_args(model, optimizer, o["scaler"], o["loss_scale"], o["every"], o["port"], o["host"], o["max_layers"],
               o["export_layers"])
    check_guard(o["on_nonfinite"], o["max_skips"], o["checkpoint"])
    check_options(**{k: o[k] for k in ("run", "rank", "record", "group_depth", "update_ratio", "targets_dir",
                                       "step_pre_hook", "loss_scale", "host", "port")})
    if not o["step_pre_hook"] and o["on_nonfinite"] != "warn":  # the guard acts in the optimizer's own pre-hook
        raise ConfigError(f"watch(): on_nonfinite={o['on_nonfinite']!r} needs the optimizer's step pre-hook; "
                          "use on_nonfinite='warn' with step_pre_hook=False")
    check_save_bad_batch(o["save_bad_batch"], o["record"])
    if not isinstance(o["trainer"], str):
        raise _fail("trainer", "a string (set by integrations, e.g. 'trellis')", o["trainer"])


def check_save_bad_batch(save_bad_batch: Any, record: Any) -> None:
    """ConfigError naming the option unless it is a bool, and True only together with record=."""
    if not isinstance(save_bad_batch, bool):
        raise ConfigError(f"watch(): save_bad_batch must be True or False, got {save_bad_batch!r}")
    if save_bad_batch and record is None:
        raise ConfigError("watch(): save_bad_batch=True needs record= (the batch is saved next to the run "
                          "record as <record>.batch-step<N>.pt)")


def check_option_names(options: Mapping[str, Any], valid: Iterable[str], where: str = "watch()") -> None:
    """Refuse a keyword `where` does not take, listing the valid ones (and the closest, if one is close)."""
    names = list(valid)
    unknown = [k for k in options if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{where}: unknown option {unknown[0]}={options[unknown[0]]!r}{hint}. "
                          f"Valid options: {', '.join(names)}")


def check_options(*, run: Any, rank: Any, record: Any, group_depth: Any, update_ratio: Any, targets_dir: Any,
                  step_pre_hook: Any, loss_scale: Any, host: Any, port: Any) -> None:
    """The keyword options check_args does not cover. Nothing is created or bound here: the host is resolved
    and probed with a socket that is closed again."""
    if run is not None and (not isinstance(run, str) or not run.strip()):
        raise _fail("run", "a non-empty string (the run label) or None (a unique default name)", run)
    if rank is not None and (not _is_int(rank) or rank < 0):
        raise _fail("rank", "an integer >= 0 or None (detected from torch.distributed / $RANK)", rank)
    if group_depth is not None and (not _is_int(group_depth) or group_depth < 1):
        raise _fail("group_depth", "an integer >= 1 (layers grouped by the first N module path parts) or None",
                    group_depth)
    for name, flag in (("update_ratio", update_ratio), ("step_pre_hook", step_pre_hook)):
        if not isinstance(flag, bool):
            raise _fail(name, "True or False", flag)
    if record is not None:
        check_argument(record)  # the record's own check: one message per kind of bad value
    _check_path("record", record, folder=False)
    _check_path("targets_dir", targets_dir, folder=True)
    if loss_scale is not None:
        _check_loss_scale(loss_scale)
    if port is not None:  # the host and the environment's targets folder are used only by an endpoint
        _check_host(host)
        if targets_dir is None and os.environ.get("SLATMON_TARGETS_DIR"):
            _check_path("$SLATMON_TARGETS_DIR", os.environ["SLATMON_TARGETS_DIR"], folder=True)


def _check_path(arg: str, value: Any, *, folder: bool) -> None:
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        what = "a folder path" if folder else "a file path"
        raise _fail(arg, f"{what} (str or os.PathLike) or None", value)
    path = os.fspath(value)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"watch(): {arg}={path!r} exists and is not a folder: pass a folder for the "
                          "Prometheus file_sd target files")
    if not folder and os.path.isdir(path):
        raise ConfigError(f"watch(): record={path!r} is a folder: pass the path of a new SQLite file, "
                          "e.g. 'runs/run.sqlite'")


def _check_loss_scale(loss_scale: Callable[[], Any]) -> None:
    """Read the hand-made scale once: a callable that fails now would fail at every forward."""
    try:
        value = float(loss_scale())
    except Exception as exc:
        raise ConfigError(f"watch(): loss_scale() must return the current loss scale as a number; calling it "
                          f"raised {type(exc).__name__}: {exc}") from None
    if not value > 0:
        raise ConfigError(f"watch(): loss_scale() must return a positive number, got {value!r}")


def _check_host(host: str) -> None:
    """Resolve `host` and bind a throw-away socket on it (port 0): an unknown name or an address of
    another machine is reported as the host's fault, before anything is started."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"watch(): host={host!r} cannot be resolved ({exc}); pass an address of this "
                          "machine to serve metrics on, e.g. '127.0.0.1' (the default) or '0.0.0.0'") from None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"watch(): host={host!r} is not an address this machine can serve on "
                          f"({exc.strerror or exc}); pass one of its own addresses, e.g. '127.0.0.1' or "
                          "'0.0.0.0'") from None


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


_issued: set[str] = set()  # default names made by this process: two watchers never share one


def default_run(run: str | None, now: Callable[[], float] | None = None, run_id: str = "",
                world_size: int = 1) -> str:
    """`run`, else $SLATMON_RUN, else torchrun's rendezvous id (`run_id`: the same on every rank, so all
    ranks of a job share one run label), else the local start time plus a suffix.

    The suffix keeps runs started in the same second apart (in Prometheus, two runs under one label
    merge into one series): the process id and a random part for a single process; for the ranks of
    a job without a rendezvous id (`world_size` > 1), a hash of MASTER_ADDR:MASTER_PORT, which they
    share (pass `run=` in a multi-node job launched without one: the ranks' clocks may not agree on
    the second)."""
    if run:
        return str(run)
    if os.environ.get("SLATMON_RUN"):
        return os.environ["SLATMON_RUN"]
    if run_id:
        return f"torchrun-{run_id}"
    stamp = time.strftime("run-%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now()))
    if world_size > 1:
        job = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
        return stamp if job == ":" else f"{stamp}-{zlib.crc32(job.encode()):08x}"
    name = f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
    while name in _issued:
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
    _issued.add(name)
    return name
