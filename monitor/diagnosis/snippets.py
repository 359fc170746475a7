"""The snippet contract: where a fix's code goes, which names it may use, and how values from a run
record or a model are written into it safely.

A snippet is Python for the user's own loop (docs/diagnosis.md, "The snippet contract"):
- a "setup" section runs once, after `model`, `optimizer` and `scaler` exist, before the first step;
- an "iteration" section is one whole training iteration (forward via `compute_loss(model, batch)`,
  backward, update), instead of the loop's own;
- a "loss" snippet defines guarded functions to call inside the loss.
A "setup+iteration" snippet starts with SETUP_HEADER and holds ITERATION_HEADER on a line of its own.

Anything that comes from a record or a model (module paths, device, optimizer class, dtype) enters the
code only as a `repr` string literal or a value from a fixed set, never as raw text: a crafted record
cannot make a snippet run anything (tests/adversarial/test_snippet_injection.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..findings import Fix

__all__ = [
    "CONTRACT_NAMES",
    "DEVICES",
    "DTYPES",
    "ITERATION_HEADER",
    "SETUP_HEADER",
    "Sections",
    "device_name",
    "dtype_name",
    "join",
    "sections",
]

SETUP_HEADER = "# once, after the model, optimizer and scaler exist (before the first step):"
ITERATION_HEADER = "# every iteration, instead of your forward / backward / optimizer.step():"
# the names a snippet may read without defining them
CONTRACT_NAMES: frozenset[str] = frozenset({"torch", "model", "optimizer", "scaler", "batch", "compute_loss"})
DEVICES: tuple[str, ...] = ("cuda", "cpu", "xpu", "mps", "hpu", "npu")  # torch device types a snippet names
DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Sections:
    """A snippet split by where it runs; empty strings for the parts it does not have."""

    setup: str = ""
    iteration: str = ""
    loss: str = ""


def join(setup: str, iteration: str) -> str:
    """A "setup+iteration" snippet: both sections under their headers."""
    return f"{SETUP_HEADER}\n{setup.strip()}\n{ITERATION_HEADER}\n{iteration.strip()}"


def sections(fix: Fix) -> Sections:
    """The parts of `fix.snippet` by where they run (Fix.where). ValueError when a "setup+iteration"
    snippet lacks the iteration header."""
    text = fix.snippet
    if fix.where == "loss":
        return Sections(loss=text)
    if fix.where == "iteration":
        return Sections(iteration=text)
    if fix.where == "setup":
        return Sections(setup=text)
    lines = text.splitlines()
    if ITERATION_HEADER not in lines:
        raise ValueError(f"a 'setup+iteration' snippet needs the line {ITERATION_HEADER!r}")
    cut = lines.index(ITERATION_HEADER)
    setup = [line for line in lines[:cut] if line != SETUP_HEADER]
    return Sections(setup="\n".join(setup), iteration="\n".join(lines[cut + 1:]))


def device_name(value: object, default: str = "cuda") -> str:
    """The device type of `value` ("cuda:1" -> "cuda") when it is one of DEVICES, else `default`."""
    text = value.split(":")[0].strip().lower() if isinstance(value, str) else ""
    return text if text in DEVICES else default


def dtype_name(value: object, default: str = "float16") -> str:
    """`value` ("torch.float16", "half", "bf16", ...) as one of DTYPES, else `default`."""
    text = re.sub(r"^torch\.", "", value.strip().lower()) if isinstance(value, str) else ""
    aliases = {"half": "float16", "fp16": "float16", "bf16": "bfloat16", "float": "float32", "fp32": "float32"}
    text = aliases.get(text, text)
    return text if text in DTYPES else default
