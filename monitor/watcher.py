"""`monitor.watch()`: hooks on a live training run; statistics to Prometheus, a run record, findings.

Hooks (all removed by `close()`): the optimizer's step pre/post hooks and load_state_dict post
hook, forward pre-hooks and forward hooks on the model's entry modules (the root, or the children of
a container root such as TRELLIS's models dict), gradient hooks on their outputs and an end-of-
backward callback on sampled iterations, a wrapper around the GradScaler instance's `update()`, and,
for one iteration after a non-finite event, localisation hooks on every module.

GPU syncs: none on unsampled steps, except under GradScaler with a fused optimizer, where the
scaler's `found_inf` is read in the step pre-hook (the same sync GradScaler itself makes for other
optimizers); one host transfer per sampled step (in the post-hook, or at the next forward under an
fp32 master copy); one `get_scale()` and one loss read after a step that was skipped.
Threads: hooks run in the training thread; the HTTP endpoint, its preparation thread (per-layer text
and the diagnosis for scrapes, export/prepare.py) and the record writer have their own.
Any exception inside the monitor is counted (`slatmon_monitor_errors_total`), logged once, and
swallowed: training goes on.
The Watcher class is in live.py (re-exported here), its parts in stepbook.py, sampled_steps.py,
scale_reads.py, attach.py and guarded.py.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import DEFAULT_PORT, check_option_names
from .live import Watcher

__all__ = ["WATCH_OPTIONS", "Watcher", "watch"]


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None,
          loss_scale: Callable[[], float] | None = None, every: int = 1, run: str | None = None,
          rank: int | None = None, port: int | None = DEFAULT_PORT, host: str = "127.0.0.1",
          record: str | os.PathLike[str] | None = None, *, on_nonfinite: str = "warn",
          max_skips: int | None = None, checkpoint: Callable[[dict[str, Any]], Any] | None = None,
          **options: Any) -> Watcher:
    """Watch `model` trained by `optimizer`; see README "Using the monitor" for every option.

    scaler: a torch.amp.GradScaler (or None). loss_scale: a callable returning a hand-made loss
    scale (e.g. `lambda: 2 ** trainer.log_scale`); under an fp32 master copy the model's `.grad`s
    are taken to carry that scale, otherwise gradients are taken as unscaled at `optimizer.step()`.
    every: sample every N optimizer steps. port: by default 9108 + LOCAL_RANK, or a free port (logged)
    when that one is busy; an explicit number fails when busy; 0 for any free port, None for no
    endpoint. record: path of the SQLite run record, or None; `{rank}` in it is replaced by the rank,
    and in a job of several processes a path without it gets `.rank<N>` before its suffix.
    Extra keyword options: max_layers, group_depth, update_ratio, targets_dir (Prometheus file_sd
    folder; env SLATMON_TARGETS_DIR), export_layers ("auto": per-layer series grouped by block when
    the job has more than 8 ranks, "full", "grouped"; the record always keeps every layer).
    on_nonfinite: "warn" (default: only report), "skip" (a step with non-finite gradients, or whose
    update made parameters/optimizer state non-finite, is kept out of the weights and counted as
    skipped; after `max_skips` consecutive skips it stops) or "stop" (raise `monitor.GuardStop` out of
    `optimizer.step()`, weights as before that step, after calling `checkpoint(last_good_state)`).
    step_pre_hook: False for loops that run backward inside `optimizer.step(closure)`: then call
    `before_optimizer_step()` yourself (see there); not with on_nonfinite="skip"/"stop".
    save_bad_batch: True (needs record=) saves the entry inputs of the first iterations (at most 3) whose
    inputs held NaN/Inf, or whose forward pass made the first one, as `<record>.batch-step<N>.pt` for
    `monitor.localize`; it reads each iteration's input check on the host (one small sync per step).
    An unknown keyword raises ConfigError listing the valid ones.
    Set SLATMON_DISABLE=1 to turn every hook off (returns a watcher with Watcher's surface that hooks and
    records nothing; the arguments are checked all the same).
    trainer: set by integrations ("trellis": `watch_trellis`) so that fixes speak the trainer's config terms.
    Critical pre-flight findings are logged as warnings (logger "monitor") when watching starts.
    """
    check_option_names(options, WATCH_OPTIONS)
    kwargs = dict(scaler=scaler, loss_scale=loss_scale, every=every, run=run, rank=rank, port=port, host=host,
                  record=record, on_nonfinite=on_nonfinite, max_skips=max_skips, checkpoint=checkpoint, **options)
    if os.environ.get("SLATMON_DISABLE") == "1":
        from .disabled import DisabledWatcher

        return DisabledWatcher(model, optimizer, **kwargs)  # type: ignore[return-value]
    return Watcher(model, optimizer, **kwargs)


# every keyword option of watch() / Watcher (integrations check theirs against it before training starts)
WATCH_OPTIONS: tuple[str, ...] = tuple(inspect.signature(Watcher.__init__).parameters)[3:]
