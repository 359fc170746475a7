"""`SampledSteps`: a Watcher's sampled steps, begun in the step pre-hook and finished after the update.

A sample begins with the step's loss (`StepBook.step_losses`), loss scale and the entry inputs' folded
counts, all left on the device; it is finished, with its one host transfer, in the step post-hook, or at
the next forward under an fp32 master copy (the model is updated after `step()` returns), or by
`findings()` / `close()`, and then recorded. Parameters changed since the layer map was built are looked
for only when a sample begins (unsampled steps stay free). Runs in the training thread, inside the
watcher's guarded hooks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .layers import LayerMap
from .paramwatch import ParamWatch, change_event
from .sampler import StepSampler
from .stepbook import mean_loss

__all__ = ["SampledSteps"]

log = logging.getLogger("monitor")

# The Watcher whose steps these are (typed Any: the watcher imports this module, and the package keeps its
# imports acyclic, type-only ones included). It provides model, optimizer, counters, tracker, layers, info,
# preflight, _sampler, _params, _layer_options, _steps, _scales, _inputs, _output, _describe() and
# _redescribe(); a rebuild replaces its layers, _sampler and _params.
Watcher = Any


def _eps(optimizer: torch.optim.Optimizer) -> tuple[float | None, ...]:
    return tuple(None if g.get("eps") is None else float(g["eps"]) for g in optimizer.param_groups)


class SampledSteps:
    """Begins and finishes `watcher`'s sampled steps."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher
        self._input_metas: list[Any] = []  # what the pending sample's folded input counts mean
        self._described_after_step = False

    def begin(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Step `step` is sampled: measure before the update (nothing read to the host yet)."""
        w = self._w
        if w._params.changed():  # only on sampled steps: unsampled ones stay free
            self._rebuild(step)
        scale, divisor = w._scales.now(optimizer, w._sampler.master)
        extra, self._input_metas = w._inputs.fold()  # rides along with the step's one transfer
        w._sampler.begin(step, mean_loss(w._steps.step_losses), scale, divisor, w._output.take(), extra)

    def finish(self, skip_reason: str | None = None) -> None:
        """Finish and record the pending sample, if any (`skip_reason`: the guard kept its update out)."""
        w = self._w
        if w._sampler.pending:
            sample = w._sampler.finish()
            if sample is not None:
                inputs = w._inputs.unfold(self._input_metas, sample.extra)
                self._input_metas = []
                if not self._described_after_step:  # optimizer state exists now: record its dtype
                    self._described_after_step = True
                    w.info = w._describe()
                    w.tracker.start_run(w.info, w.preflight)
                if sample.loss_scale is not None:
                    w.counters.loss_scale = sample.loss_scale
                w._steps.last_was_skip = False
                w.tracker.sampled_step(sample, w.info, w._steps.step_lr, _eps(w.optimizer), skip_reason, inputs)

    def _rebuild(self, step: int) -> None:
        """Parameters were replaced, added or converted after watch(): measure the ones there are now,
        describe and lint the set-up again, and record a `params_changed` event."""
        w = self._w
        max_layers, group_depth, update_ratio = w._layer_options
        before, w.layers = w.layers, LayerMap.build(w.model, max_layers, group_depth)
        w._sampler = StepSampler(w.layers, w.optimizer, update_ratio)  # drops the stale capture
        w._params = ParamWatch(w.model, w.optimizer)
        w._redescribe()
        event = change_event(step, before, w.layers, w.optimizer)
        w.tracker.event(event)
        orphans = event.detail["not_in_optimizer"]
        log.warning("slat-monitor: parameters changed after watch() (step %d): now %d layers%s", step,
                    len(w.layers.names), f"; the optimizer does not hold these trainable layers' parameters "
                    f"(they will not train): {', '.join(orphans)}" if orphans else "")
