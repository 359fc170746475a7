"""What the watcher keeps: bounded history, the published snapshot, events, localisation, record.

Called from the training thread only, except `findings()`, `events()` and `history()` which other
threads (the scrape handler) may call: they read lists by reference and copy them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from .findings import Finding
from .history import Event, History, LayerObs, RunInfo, StepObs
from .localize import Localizer
from .record import RecordWriter
from .sampler import ROOT, SampledStep
from .snapshot import Counters, Snapshot

__all__ = ["Tracker"]

HEAD_STEPS = 20  # sampled steps whose layer rows are kept from the start of the run
TAIL_STEPS = 200  # ... and from its end
MAX_STEPS = 20000
MAX_EVENTS = 1000
LOCALIZATIONS = 3  # at most this many armed iterations per run


def _nonfinite(v: float | None) -> bool:
    return v is not None and not math.isfinite(v)


def _first_event(s: SampledStep, tensor: str, bad: list[LayerObs], attr: str) -> Event:
    """The first non-finite `tensor` (grad / param): its layer is the module owning the first non-finite
    parameter, exact also when that module is measured inside a grouped layer (named in `group`)."""
    detail: dict[str, object] = {"layers": len(bad), "elements": sum(getattr(r, attr) for r in bad)}
    param = s.first_nonfinite.get(tensor)
    layer = bad[0].layer
    if param is not None:
        detail["parameter"] = param
        owner = param.rpartition(".")[0] or "<root>"
        if owner != layer:
            detail["group"] = layer
        layer = owner
    return Event(s.step, "nonfinite", layer, tensor, detail)


class Tracker:
    """Observations of one watched run. `counters` are the watcher's live scalars (read, and the
    non-finite step counts written, here); `model` is where localisation hooks go when armed;
    `guard` wraps hook bodies so their failures are counted, never raised."""

    def __init__(self, *, run: str, rank: int, every: int, counters: Counters, model: nn.Module, record: Any,
                 guard: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self.run, self.rank, self.every = run, rank, every
        self.counters = counters
        self._model = model
        self._guard = guard
        self.snapshot = Snapshot(run=run, rank=rank)
        self._steps: list[StepObs] = []
        self._head: list[LayerObs] = []
        self._tail: list[list[LayerObs]] = []
        self._events: list[Event] = []
        self._seen: set[str] = set()
        self._force_sample = False
        self._localizer: Localizer | None = None
        self._localizations_left = LOCALIZATIONS
        self._acts: tuple[int, dict[str, int]] | None = None
        self._writer = RecordWriter(record, counters) if record is not None else None
        self._version = 0
        self._cache: tuple[int | None, list[Finding]] = (None, [])

    # -- observations -------------------------------------------------------------------
    def start_run(self, info: RunInfo, preflight: list[Finding]) -> None:
        self._version += 1
        self.snapshot = dataclasses.replace(self.snapshot, layer_info=dict(info.layers))
        if self._writer is not None:
            self._writer.put_meta("run", dataclasses.asdict(info))
            self._writer.put_meta("preflight", [f.to_dict() for f in preflight])

    def should_sample(self, step: int) -> bool:
        """Whether `step` is sampled; consumes a forced sample."""
        sample = self.will_sample(step)
        self._force_sample = False
        return sample

    def will_sample(self, step: int) -> bool:
        return self._force_sample or (step - 1) % self.every == 0

    def sampled_step(self, s: SampledStep, info: RunInfo, lr: tuple[float, ...],
                     eps: tuple[float | None, ...], skip_reason: str | None = None,
                     events: list[Event] | None = None) -> None:
        """A sampled step; `lr` / `eps` per param group as in effect for that step; `skip_reason` when
        the guard kept it out of the weights (the rows show the update as the optimizer computed it,
        before the undo); `events` read with its transfer (non-finite inputs), recorded with it."""
        rows = self._merge_activations(s.step, list(s.rows))
        obs = StepObs(step=s.step, time=self.counters.time, sampled=True, skipped=skip_reason is not None,
                      skipped_total=self.counters.skipped_steps, loss=s.loss, loss_scale=s.loss_scale,
                      grad_norm_total=s.grad_norm_total, grad_norm_applied=s.grad_norm_applied,
                      grad_nonfinite=s.grad_nonfinite, param_nonfinite=s.param_nonfinite, lr=lr, eps=eps,
                      skip_reason=skip_reason)
        events = list(events or ()) + self._nonfinite_events(s, rows)
        self._append(obs, rows, events)
        first = self.snapshot.param_nonfinite_first
        if not s.param_nonfinite:
            first = None
        elif first is None:
            first = {r.layer: r.param_nonfinite or 0 for r in rows if r.param_nonfinite is not None}
        out = next((r.activation_nonfinite for r in rows if r.layer == ROOT), None)
        self.snapshot = Snapshot(run=self.run, rank=self.rank, last=obs, loss=s.loss, rows=tuple(rows),
                                 layer_info=dict(info.layers), param_nonfinite_first=first, lr=lr, eps=eps,
                                 output_nonfinite=out)

    def skipped_step(self, step: int, scale: float | None, loss: float | None, output_nonfinite: int | None,
                     reason: str, lr: tuple[float, ...]) -> None:
        """A step that was skipped (`reason`: scaler, loss_scale, user, ...): its loss and the model
        output's non-finite count (when that iteration's forward was probed) are kept, since a skip
        hides the moment of failure. The next step is always sampled (it shows whether the learning
        rate moved on although the weights did not)."""
        c = self.counters
        obs = StepObs(step=step, time=c.time, sampled=False, skipped=True, skipped_total=c.skipped_steps,
                      loss=loss, loss_scale=scale, lr=lr, skip_reason=reason)
        rows = [] if output_nonfinite is None else [
            LayerObs(step=step, layer=ROOT, activation_nonfinite=output_nonfinite)]
        events = []
        if _nonfinite(loss) and "loss" not in self._seen:
            self._seen.add("loss")
            events.append(Event(step, "nonfinite", None, "loss", {"value": str(loss), "skipped": True}))
        self._append(obs, self._merge_activations(step, rows), events)
        self.snapshot = dataclasses.replace(self.snapshot, loss=loss, output_nonfinite=output_nonfinite)
        self._arm()
        self._force_sample = True

    def guard_stopped(self, step: int, reason: str, finding: str | None, message: str) -> None:
        """The guard stopped training: an event, and the record flushed before the exception leaves."""
        self._record_events([Event(step, "guard_stop", None, None,
                                   {"reason": reason, "finding": finding, "message": message})])
        if self._writer is not None:
            self._writer.flush()

    def event(self, event: Event) -> None:
        """An event of the watcher's own (e.g. `params_changed`): kept, and written to the record."""
        self._record_events([event])

    # -- localisation -------------------------------------------------------------------
    def add_events(self, events: list[Event]) -> None:
        """Events observed outside a step's own transfer (inputs read at close, saved batches)."""
        self._record_events(events)

    def resolve_localization(self, step: int) -> list[Event]:
        """Read what the armed hooks saw during the iteration now ending as `step`, then disarm; the
        events recorded."""
        if self._localizer is None:
            return []
        loc, self._localizer = self._localizer, None
        loc.remove()
        events, acts = loc.resolve(step)
        self._acts = (step, acts)
        if any(acts.values()):
            self.counters.nonfinite_steps["activation"] += 1
        if events:
            self._record_events(events)
        return events

    @property
    def armed(self) -> bool:
        return self._localizer is not None

    def catch_up(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Localisation armed inside `module`'s forward pre-hooks (a skip seen at the next forward): its
        call began before the hooks existed; record it now."""
        if self._localizer is not None:
            self._localizer.enter(module, args)

    def _arm(self) -> None:
        if self._localizer is None and self._localizations_left > 0:
            self._localizations_left -= 1
            self._localizer = Localizer(self._model, self._guard)
            self._force_sample = True

    def _merge_activations(self, step: int, rows: list[LayerObs]) -> list[LayerObs]:
        if self._acts is None or self._acts[0] != step:
            return rows
        acts, self._acts = self._acts[1], None
        merged = [dataclasses.replace(r, activation_nonfinite=acts.pop(r.layer)) if r.layer in acts else r
                  for r in rows]
        return merged + [LayerObs(step=step, layer=name, activation_nonfinite=n) for name, n in acts.items()]

    # -- bookkeeping --------------------------------------------------------------------
    def _nonfinite_events(self, s: SampledStep, rows: list[LayerObs]) -> list[Event]:
        events = []
        for tensor, attr in (("grad", "grad_nonfinite"), ("param", "param_nonfinite")):
            bad = [r for r in rows if (getattr(r, attr) or 0) > 0]
            if bad:
                self.counters.nonfinite_steps[tensor] += 1
                if tensor not in self._seen:
                    self._seen.add(tensor)
                    events.append(_first_event(s, tensor, bad, attr))
        if _nonfinite(s.loss) and "loss" not in self._seen:
            self._seen.add("loss")
            events.append(Event(s.step, "nonfinite", None, "loss", {"value": str(s.loss)}))
        if s.grad_nonfinite or _nonfinite(s.loss):
            self._arm()
        return events

    def _append(self, obs: StepObs, rows: list[LayerObs], events: list[Event]) -> None:
        self._steps.append(obs)
        if len(self._steps) > MAX_STEPS:
            self._steps = self._steps[-MAX_STEPS:]
        if rows:
            if len({r.step for r in self._head}) < HEAD_STEPS:
                self._head = self._head + rows
            else:
                self._tail = (self._tail + [rows])[-TAIL_STEPS:]
        self._record_events(events, write=False)
        self._version += 1
        if self._writer is not None:
            self._writer.put_step(obs, rows, events)

    def _record_events(self, events: list[Event], write: bool = True) -> None:
        if not events:
            return
        self._events = (self._events + events)[:MAX_EVENTS]
        self._version += 1
        if write and self._writer is not None:
            self._writer.put_events(events)

    # -- readers (any thread) -----------------------------------------------------------
    def history(self, info: RunInfo, preflight: list[Finding]) -> History:
        rows = list(self._head) + [r for step_rows in list(self._tail) for r in step_rows]
        gaps = list(self._writer.gap_events()) if self._writer is not None else []  # what the record lost
        return History(run=info, steps=list(self._steps), layers=rows, events=list(self._events) + gaps,
                       preflight=list(preflight))

    @property
    def version(self) -> int:
        """Moves whenever the history, the events, the snapshot or what the record lost may have changed
        (any thread; both parts only grow)."""
        return self._version + (self._writer.version if self._writer is not None else 0)

    def findings(self, info: RunInfo, preflight: list[Finding]) -> list[Finding]:
        """Every rule over the history (cached per version; any thread). A rule that fails is counted in
        `counters.background_errors` (and named by a `diagnosis_incomplete` finding)."""
        version = self.version
        if self._cache[0] != version:
            from .diagnosis import run_rules

            found = run_rules(self.history(info, preflight), on_error=lambda *_: self.counters.count_background_error())
            self._cache = (version, found)
        return list(self._cache[1])

    def events(self) -> list[Event]:
        """A copy of the events kept so far (any thread)."""
        return list(self._events)

    def discard_record(self) -> None:
        """Undo the record after watch() itself failed (closed first): removed if this run created the file,
        emptied again if it was an empty file the user had made."""
        if self._writer is not None:
            self._writer.discard()

    def close(self) -> None:
        if self._localizer is not None:
            self._localizer.remove()
            self._localizer = None
        if self._writer is not None:
            self._writer.close()
