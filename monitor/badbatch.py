"""`watch(..., save_bad_batch=True)`: the entry inputs of a bad iteration saved next to the run record,
so that `monitor.localize` can replay them.

Saved: the first iterations whose entry inputs held NaN/Inf (at most 3 per run), and the first whose
forward pass localisation found a module making the first non-finite activation (once). The file
`<record>.batch-step<N>.pt` is `torch.save` of `{"step", "reason", "calls": [{"module", "args",
"kwargs"}]}`, every tensor a detached CPU copy (the user's tensors and objects are not touched; a
copy of a GPU tensor syncs, once per saved batch). `diagnosis.inputs_seen.replay_snippet()` writes
the code that loads and replays it.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from .history import Event

__all__ = ["MAX_SAVED", "BatchSaver"]

MAX_SAVED = {"nonfinite_input": 3, "nonfinite_forward": 1}  # files per run, per reason
MAX_DEPTH = 6


def _cpu(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """(a copy of `value` with every tensor detached and on the CPU, whether it is plain: tensors,
    numbers, strings and builtin containers only, loadable with torch.load(weights_only=True))."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True), True
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.dtype, torch.device)):
        return value, True
    if depth >= MAX_DEPTH:
        return value, False
    if isinstance(value, (tuple, list)):
        items = [_cpu(v, depth + 1) for v in value]
        values, plain = [v for v, _ in items], all(p for _, p in items)
        if isinstance(value, list):
            return values, plain
        if type(value) is tuple:
            return tuple(values), plain
        return (type(value)(*values) if hasattr(value, "_fields") else tuple(values)), False  # namedtuple
    if isinstance(value, dict):
        items_d = {k: _cpu(v, depth + 1) for k, v in value.items()}
        return {k: v for k, (v, _) in items_d.items()}, all(p for _, p in items_d.values())
    if hasattr(value, "__dict__"):  # an object holding tensors (a sparse tensor): a shallow copy of ours
        clone = copy.copy(value)
        for k, v in vars(value).items():
            object.__setattr__(clone, k, _cpu(v, depth + 1)[0])
        return clone, False
    return value, False


class BatchSaver:
    """Saves bad batches next to `record` (a path), at most MAX_SAVED per run."""

    def __init__(self, record: str) -> None:
        self.record = record
        self.saved: list[tuple[str, str]] = []  # (reason, path)

    def path(self, step: int) -> str:
        return f"{self.record}.batch-step{step}.pt"

    def save(self, step: int, reason: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> Event | None:
        """Save `calls` (entry module path, args, kwargs) of `step`; a "batch_saved" event, or None when
        the run's quota for `reason` is used up or there is nothing to save."""
        if not calls or sum(r == reason for r, _ in self.saved) >= MAX_SAVED.get(reason, 1):
            return None
        copied, plain = [], True
        for module, args, kwargs in calls:
            (a, k), ok = _cpu((tuple(args), dict(kwargs)))
            copied.append({"module": module, "args": a, "kwargs": k})
            plain = plain and ok
        path = self.path(step)
        tmp = path + ".tmp"
        torch.save({"step": step, "reason": reason, "calls": copied}, tmp)
        os.replace(tmp, path)  # never a half-written file under the final name
        self.saved.append((reason, path))
        return Event(step, "batch_saved", calls[0][0] or None, "input", {
            "path": os.path.abspath(path), "reason": reason, "calls": len(copied), "weights_only": plain})

