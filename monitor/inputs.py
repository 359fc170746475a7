"""Where data enters the model: the floating-point tensors passed to its entry modules, named, and their
non-finite elements checked on the device every training iteration. Data only: a tensor some
differentiable computation produced (another entry module's output, as in decoder(encoder(x))) is the
model's own activation and is left to localisation.

Each tensor is named the way the caller passed it (`values.input_slots`): `args[0]`, `kwargs['cond']`,
`args[0].feats` (sparse tensors), `args[1]['image']`, ... `InputProbe` checks them in a forward
pre-hook on the entry modules: on iterations that will be sampled (localisation's included) their
NaN/Inf elements are counted (two fused kernels); on the others a float32 sum per tensor flags them
(NaN/Inf exactly when an element is; one read of the data, no temporary). Nothing is read on the host
there: the values wait on the device until the next read, folded into a sampled step's one transfer
(`fold` / `unfold`), or read directly (`flush`: at `findings()` and `close()`, and every 1024 pending
iterations to bound memory). So a bad batch on an unsampled step is still reported at its own step.
With a `saver` (`watch(save_bad_batch=True)`) every iteration is read at its end instead (one small host
read per step) while its inputs are still referenced, so the offending batch can be saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .badbatch import BatchSaver
from .capture import entry_modules
from .history import Event
from .layers import module_path
from .probes import DeviceBatch
from .values import data_slots, nonfinite_counts, nonfinite_sums

__all__ = ["EntryCall", "InputProbe", "Slot"]

MAX_PENDING = 1024  # iterations kept on the device between two reads
MAX_STEPS = 16  # steps with input events per run
MAX_PER_STEP = 4  # input events per step
MAX_CALLS = 8  # entry calls (micro-batches) of one iteration kept for saving


EntryCall = tuple[str, tuple[Any, ...], dict[str, Any]]  # an entry call: (module path, args, kwargs)


@dataclass(frozen=True)
class Slot:
    """One counted input tensor of one iteration."""

    step: int
    module: str  # entry module path ("" = the model itself)
    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    call: int  # index of the entry call within its iteration
    counted: bool  # its value is a NaN/Inf count (sampled iterations), else a sum that is NaN/Inf when any is


class InputProbe:
    """Forward pre-hooks on the entry modules of `model`; `next_step()` is the step number the iteration
    under way will get, `wanted()` whether it will be sampled (then its inputs' NaN/Inf are counted);
    `guard(fn)` wraps the hook body (a failure is counted by the watcher, never raised); `saver`: save bad
    batches (see `end_iteration`). Hooks are skipped under `torch.no_grad()` (evaluation passes)."""

    def __init__(self, model: nn.Module, next_step: Callable[[], int], wanted: Callable[[], bool],
                 guard: Callable[[Callable[..., Any]], Callable[..., Any]], saver: BatchSaver | None = None) -> None:
        self._next_step = next_step
        self._wanted = wanted
        self._saver = saver
        self.keep = saver is not None
        self._pending: list[tuple[torch.Tensor, list[Slot]]] = []
        self._calls: list[EntryCall] = []  # the iteration's entry calls (keep=True only)
        self._overflow: list[Event] = []  # read early to bound memory, reported at the next read
        self._steps = 0  # steps with input events so far
        names = {id(m): module_path(n) for n, m in model.named_modules()}
        self._handles = [
            m.register_forward_pre_hook(torch.compiler.disable(guard(self._hook(names.get(id(m), "")))),
                                        with_kwargs=True)
            for m in entry_modules(model)]

    def _hook(self, module: str) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
            if not torch.is_grad_enabled() or not self._handles:
                return
            kwargs = kwargs or {}
            call = -1
            if self.keep and len(self._calls) < MAX_CALLS:
                call = len(self._calls)
                self._calls.append((module, args, kwargs))
            slots = data_slots(args, kwargs)
            if not slots:
                return
            step, counted = self._next_step(), self.keep or self._wanted()
            check = nonfinite_counts if counted else nonfinite_sums
            by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
            for name, t in slots:
                by_device.setdefault(t.device, []).append((name, t))
            for group in by_device.values():  # never move a value across devices (that would sync)
                meta = [Slot(step, module, n, tuple(t.shape), str(t.dtype).removeprefix("torch."), t.numel(), call,
                             counted) for n, t in group]
                self._pending.append((check([t for _, t in group]), meta))
            if len(self._pending) > MAX_PENDING and not self.keep:
                self._overflow += self._events_for(self._read())

        return hook

    def fold(self) -> tuple[dict[str, torch.Tensor], list[list[Slot]]]:
        """The pending counts as one 1-D tensor per device (named for DeviceBatch), and what they mean
        (for `unfold`). Leaves nothing pending; no host read."""
        pending, self._pending = self._pending, []
        by_device: dict[torch.device, list[tuple[torch.Tensor, list[Slot]]]] = {}
        for counts, meta in pending:
            by_device.setdefault(counts.device, []).append((counts, meta))
        tensors, metas = {}, []
        for k, parts in enumerate(by_device.values()):
            tensors[f"inputs{k}"] = torch.cat([c for c, _ in parts])
            metas.append([m for _, meta in parts for m in meta])
        return tensors, metas

    def unfold(self, metas: list[list[Slot]], values: dict[str, list[float | None]]) -> list[Event]:
        """Events for the non-finite inputs among folded counts (`values`: the fetched tensors of `fold`)."""
        overflow, self._overflow = self._overflow, []
        return overflow + self._events_for(_bad(metas, values))

    def flush(self) -> list[Event]:
        """Read every pending count now (one host transfer per device) and return their events."""
        overflow, self._overflow = self._overflow, []
        return overflow + self._events_for(self._read())

    def end_iteration(self, step: int, localized: list[Event]) -> list[Event]:
        """With a saver: read the iteration now ending as `step` (one host read) and save its entry calls
        when their inputs were non-finite, or, with none such, when `localized` has a forward culprit;
        returns its input events and the "batch_saved" event. The references to its inputs are dropped.
        Without a saver: nothing (the counts wait on the device for the next read)."""
        if self._saver is None:
            return []
        calls, self._calls = self._calls, []
        bad = self._read()
        overflow, self._overflow = self._overflow, []
        events = overflow + self._events_for(bad)
        chosen = [calls[i] for i in sorted({m.call for m, _ in bad if 0 <= m.call < len(calls)})]
        if chosen:
            saved = self._saver.save(step, "nonfinite_input", chosen)
        elif any(e.detail.get("direction") == "forward" for e in localized):
            saved = self._saver.save(step, "nonfinite_forward", calls)
        else:
            saved = None
        return events + ([saved] if saved else [])

    def _read(self) -> list[tuple[Slot, float | None]]:
        tensors, metas = self.fold()
        if not tensors:
            return []
        batch = DeviceBatch()  # one transfer per device, counted in probes.host_reads()
        for name, t in tensors.items():
            batch.add_values(name, t)
        return _bad(metas, batch.fetch())

    def _events_for(self, bad: list[tuple[Slot, float | None]]) -> list[Event]:
        out: list[Event] = []
        for m, n in bad:
            if out and out[-1].step == m.step and sum(e.step == m.step for e in out) >= MAX_PER_STEP:
                continue
            if not out or out[-1].step != m.step:
                if self._steps >= MAX_STEPS:
                    break
                self._steps += 1
            out.append(Event(m.step, "nonfinite", m.module or None, "input", {
                "input": m.name, "shape": list(m.shape), "dtype": m.dtype, "nonfinite": None if n is None else int(n),
                "numel": m.numel}))
        return out

    def remove(self) -> None:
        """Remove the hooks and drop every reference to inputs. Idempotent."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._calls = []


def _bad(metas: list[list[Slot]], values: dict[str, list[float | None]]) -> list[tuple[Slot, float | None]]:
    """(slot, NaN/Inf count; None: not counted on an unsampled iteration) for every non-finite input."""
    out: list[tuple[Slot, float | None]] = []
    for k, meta in enumerate(metas):
        for m, v in zip(meta, values.get(f"inputs{k}", [])):
            if v is None:
                continue
            if m.counted and v:
                out.append((m, v))
            elif not m.counted and not math.isfinite(v):
                out.append((m, None))
    return sorted(out, key=lambda mn: mn[0].step)
