"""A Watcher's hooks put on and taken off: `attach()` installs them and starts the endpoint,
`removals()` lists what `close()` undoes, each part to run on its own.

Hooks: the optimizer's step pre/post hooks (the guard's between them) and load_state_dict post hook,
forward pre-hooks on the entry modules, the OutputProbe and InputProbe (entry forward hooks, gradient
hooks, the end-of-backward callback), the GradScaler tap (a wrapper of the instance's `update()`).
Each is undone by `close()`; the scaler's `update()` is put back exactly when its last watcher closes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

from .badbatch import BatchSaver
from .capture import OutputProbe, entry_modules
from .config import DefaultPort
from .distributed import default_port
from .guard.hooks import GuardHooks
from .inputs import InputProbe
from .scaling import CustomScaleTap, GradScalerTap

__all__ = ["attach", "removals"]

# The Watcher hooked up here (typed Any: the watcher imports this module, and the package keeps its imports
# acyclic, type-only ones included). attach() sets its _nonfinite_guard, _handles, _output, _inputs,
# _server, _target and url, and its _scales' taps; its hook methods and _guard() are what gets registered.
Watcher = Any


def attach(w: Watcher, scaler: Any, loss_scale: Callable[[], float] | None, on_nonfinite: str,
           max_skips: int | None, checkpoint: Callable[[dict[str, Any]], Any] | None, step_pre_hook: bool,
           port: int | None, host: str, targets_dir: str | os.PathLike[str] | None,
           save_bad_batch: bool = False) -> None:
    """Install every hook of `w` and start its endpoint (watch()'s arguments are valid by now). What was
    installed before a failure is on `w` already, for `close()` to remove."""
    model, optimizer = w.model, w.optimizer
    w._scales.tap = (GradScalerTap(scaler, w._guard(w._steps.on_scaler_update), w._error)
                     if w._kind == "grad_scaler" else None)
    w._scales.custom = CustomScaleTap(loss_scale) if loss_scale is not None else None
    w._nonfinite_guard = (None if on_nonfinite == "warn" else
                          GuardHooks(w, on_nonfinite, max_skips, checkpoint))
    # step_pre_hook=False: the caller calls before_optimizer_step() itself (optimizer.step(closure) loops)
    w._handles = [
        *([optimizer.register_step_pre_hook(w._pre_step)] if step_pre_hook else []),
        *(w._nonfinite_guard.register() if w._nonfinite_guard else []),  # after _pre_step, before _post_step
        optimizer.register_step_post_hook(w._post_step),
        optimizer.register_load_state_dict_post_hook(w._on_load_state_dict),
        # torch.compile traces hooks on an OptimizedModule: ours run eagerly, outside the graph
        *(m.register_forward_pre_hook(torch.compiler.disable(w._pre_forward)) for m in entry_modules(model)),
    ]
    w._output = OutputProbe(model, lambda: w.tracker.will_sample(w.counters.step + 1), w._backward_end, w._guard)
    # the entry inputs' NaN/Inf, counted on the device every iteration (a bad batch on any step)
    w._inputs = InputProbe(model, lambda: w.counters.step + 1,
                           lambda: w.tracker.will_sample(w.counters.step + 1), w._guard,
                           BatchSaver(str(w.record_path)) if save_bad_batch else None)
    if port is not None:
        _serve(w, host, port, targets_dir or os.environ.get("SLATMON_TARGETS_DIR"))


def removals(w: Watcher) -> list[Callable[[], None]]:
    """What `close()` runs, in order, each on its own: the hook handles (taken off `w`), the guard's and
    the probes' hooks, the scaler tap, the tracker (record flushed), the file_sd target, the endpoint."""
    handles, w._handles = w._handles, []
    parts = [h.remove for h in handles]
    parts += [x.remove for x in (w._nonfinite_guard, w._output, w._inputs, w._scales.tap) if x is not None]
    parts += [w.tracker.close, *([w._target.remove] if w._target is not None else []),
              functools.partial(_stop_server, w)]
    return parts


def _serve(w: Watcher, host: str, port: int, targets_dir: str | os.PathLike[str] | None) -> None:
    from .export.server import serve

    chosen = not isinstance(port, DefaultPort)  # an explicit port fails when busy; the default falls back
    tracker = w.tracker
    w._server, w.url = serve(lambda: tracker.snapshot, lambda: w.counters,
                             lambda: tracker.findings(w.info, w.preflight), lambda: w.info,
                             host, port if chosen else default_port(w.dist),
                             events=tracker.events, fallback=not chosen, export_layers=w._export_layers,
                             version=lambda: tracker.version)
    if targets_dir:  # file-based service discovery: Prometheus finds this run by itself
        from .ops.targets import register

        w._target = register(targets_dir, host, w._server.server_address[1], w.run, w.rank)


def _stop_server(w: Watcher) -> None:
    server, w._server = w._server, None
    if server is not None:
        try:
            server.shutdown()
        finally:
            server.server_close()  # the port is given back even when shutdown() failed
