"""Fault runs that used to be called healthy, written as run records, with their raw-torch truth."""

from __future__ import annotations

import math
from pathlib import Path

from .matrix import Cell, Truth, run_cell

NAN_AT = 4
NEVER_HEALTHY = {
    "fp32-nan-batch": Cell("fp32", bad_steps=(NAN_AT,), bad_value=math.nan, steps=6),
    "bf16-nan-batch": Cell("bf16-autocast", bad_steps=(NAN_AT,), bad_value=math.nan, steps=6),
    "fp16-nan-batch": Cell("fp16-pure", bad_steps=(NAN_AT,), bad_value=math.nan, steps=6),
    "bf16-clip-spread": Cell("bf16-autocast", clip=1.0, nan_grad_layer=(NAN_AT, "blocks.0"), steps=6),
}


def first_nonfinite_step(truth: Truth) -> int:
    """The step at which the raw loop first saw a non-finite loss or gradient."""
    return min(s for s in truth.loss
               if not math.isfinite(truth.loss[s]) or any(truth.grad_nonfinite[s].values()))


def fault_record(name: str, folder: Path, **watch_options) -> tuple[Path, Truth]:
    path = folder / f"{name}.sqlite"
    truth, _ = run_cell(NEVER_HEALTHY[name], watch=True, record=str(path), run=name, **watch_options)
    return path, truth
