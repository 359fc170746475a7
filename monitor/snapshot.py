"""The latest observed state, immutable, swapped in by reference after each sampled step.

The training thread builds a new Snapshot and assigns it; the scrape thread reads whichever one it
finds. No locks: a reference assignment is atomic, and nothing in a Snapshot is ever mutated.
Counters that move on every iteration (skipped steps, errors, time spent) live in `Counters`,
plain ints and floats that only the training thread writes (except `background_errors`, counted
under a lock by the threads that diagnose and serve scrapes).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .history import LayerInfo, LayerObs, StepObs

__all__ = ["Counters", "Snapshot"]

_BACKGROUND_LOCK = threading.Lock()


@dataclass
class Counters:
    step: int = 0  # optimizer iterations seen, skipped ones included
    time: float = 0.0  # unix time of the last one
    loss_scale: float | None = None
    skipped_steps: int = 0
    nonfinite_steps: dict[str, int] = field(default_factory=lambda: {"grad": 0, "param": 0, "activation": 0})
    errors: int = 0
    monitor_seconds: float = 0.0
    record_errors: int = 0  # observations the run record lost; written by the record writer thread only
    # errors caught off the training thread's hooks: the diagnosis, the scrape (count_background_error)
    background_errors: int = 0

    def count_background_error(self) -> None:
        """One more error caught in the diagnosis or the scrape path (any thread: under a lock)."""
        with _BACKGROUND_LOCK:
            self.background_errors += 1


@dataclass(frozen=True)
class Snapshot:
    run: str
    rank: int
    last: StepObs | None = None  # the last *sampled* step
    loss: float | None = None
    rows: tuple[LayerObs, ...] = ()  # per layer, from the last sampled step
    layer_info: dict[str, LayerInfo] = field(default_factory=dict)
    # Per-layer non-finite parameter counts at the step they first appeared, held while any parameter
    # stays non-finite: one step later NaNs have spread everywhere and say nothing about the origin.
    param_nonfinite_first: dict[str, int] | None = None
    lr: tuple[float, ...] = ()
    eps: tuple[float | None, ...] = ()
    # NaN+Inf elements of the entry outputs in the last step seen (sampled or skipped), when checked
    output_nonfinite: int | None = None
