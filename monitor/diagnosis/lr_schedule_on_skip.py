"""lr_schedule_on_skip: the learning-rate schedule advanced on steps whose update was skipped.

GradScaler, TRELLIS's `log_scale` and loops that skip a NaN step still call `scheduler.step()`
(TRELLIS does on purpose; Lightning and Hugging Face users hit it by accident): each skip moves the
warmup or decay one step ahead of the weights. Fires (warning) when a skipped step k has a learning
rate recorded and the next observed step k+1 has a different one, for any param group - the
scheduler stepped during an iteration whose optimizer step did not run. A constant lr never fires.
"""

from __future__ import annotations

import math

from ..findings import Finding
from ..history import History
from .observe import sorted_steps

CODE = "lr_schedule_on_skip"


def _moved(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    return any(not math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0) for x, y in pairs)


def rule(history: History) -> list[Finding]:
    """See the module docstring."""
    steps = sorted_steps(history)
    hits = [(s, n) for s, n in zip(steps, steps[1:])
            if s.skipped and n.step == s.step + 1 and s.lr and n.lr and _moved(s.lr, n.lr)]
    if not hits:
        return []
    first, after = hits[0]
    lines = [f"step {first.step} was skipped, yet the learning rate moved from {first.lr[0]:g} to {after.lr[0]:g} "
             f"by step {after.step}",
             f"{len(hits)} skipped step(s) advanced the schedule: "
             + ", ".join(str(s.step) for s, _ in hits[:8]),
             "call scheduler.step() only when the optimizer step ran (e.g. when scaler.get_scale() did not drop)"]
    title = f"The learning-rate schedule advances on skipped steps (first: step {first.step})"
    return [Finding(CODE, "warning", title, lines, first.step, (), ())]
