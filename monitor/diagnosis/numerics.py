"""Floating-point facts the rules reason with: dtype names, exact rounding to fp16/bf16/fp32, Adam
underflow thresholds. Pure Python (no torch), so the rules stay testable anywhere.

All rounding is IEEE round-to-nearest-even, as PyTorch does when it stores a value in that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "FORMATS",
    "FloatFormat",
    "adam_state_underflow_grad",
    "eps_rounds_to_zero",
    "eps_is_subnormal",
    "is_low_precision",
    "normalize_dtype",
    "round_to",
    "ulp",
]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: `mant_bits` includes the implicit bit, `emin` is the exponent
    of the smallest normal number, `max` the largest finite value."""

    name: str
    mant_bits: int
    emin: int
    max: float

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mant_bits + 1)


FORMATS: dict[str, FloatFormat] = {
    "float16": FloatFormat("float16", 11, -14, 65504.0),
    "bfloat16": FloatFormat("bfloat16", 8, -126, 3.3895313892515355e38),
    "float32": FloatFormat("float32", 24, -126, 3.4028234663852886e38),
}

_ALIASES = {
    "float16": "float16", "half": "float16", "fp16": "float16", "f16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "float": "float32", "fp32": "float32", "f32": "float32",
    "float64": "float64", "double": "float64", "fp64": "float64",
}


def normalize_dtype(name: object) -> str | None:
    """'torch.float16', 'half', 'fp16' ... -> 'float16'; unknown or None -> None (or the bare name)."""
    if not isinstance(name, str) or not name:
        return None
    bare = name.strip().lower().removeprefix("torch.")
    return _ALIASES.get(bare, bare)


def is_low_precision(dtype: object) -> bool:
    """True for float16 and bfloat16 (any spelling)."""
    return normalize_dtype(dtype) in ("float16", "bfloat16")


def round_to(x: float, dtype: str) -> float:
    """`x` as stored in `dtype` (round-to-nearest-even, overflow to +-inf); other dtypes: `x` unchanged."""
    fmt = FORMATS.get(normalize_dtype(dtype) or "")
    if fmt is None or not math.isfinite(x) or x == 0:
        return x
    _, e = math.frexp(abs(x))  # abs(x) = m * 2**e with m in [0.5, 1)
    exponent = max(e - 1, fmt.emin)
    quantum = 2.0 ** (exponent - fmt.mant_bits + 1)
    rounded = round(abs(x) / quantum) * quantum  # round(): half to even
    if rounded > fmt.max:
        rounded = math.inf
    return math.copysign(rounded, x)


def eps_rounds_to_zero(eps: float, dtype: str) -> bool:
    """Adam's eps vanishes when added in `dtype` (fp16: eps <= 2**-25 ~ 2.98e-8, so 1e-8 does)."""
    return eps > 0 and round_to(eps, dtype) == 0.0


def eps_is_subnormal(eps: float, dtype: str) -> bool:
    """eps survives in `dtype` only as a subnormal (fp16: 2.98e-8 < eps < 6.1e-5): few significant bits,
    and a denominator that small lets one step move a weight by up to lr * |g| / eps."""
    fmt = FORMATS.get(normalize_dtype(dtype) or "")
    if fmt is None or not eps > 0:
        return False
    stored = round_to(eps, fmt.name)
    return 0.0 < stored < fmt.smallest_normal


def adam_state_underflow_grad(dtype: str, beta2: float = 0.999, first_step: bool = True) -> float:
    """Largest |gradient| whose contribution to exp_avg_sq rounds to 0 in `dtype`.

    First step: exp_avg_sq = (1 - beta2) * g**2, which is 0 below sqrt(2**-25 / (1 - beta2)) in fp16
    (5.5e-3 for beta2 = 0.999). Steady state: exp_avg_sq ~ g**2, 0 below sqrt(2**-25) ~ 1.7e-4.
    Returns 0.0 for dtypes without a known format.
    """
    fmt = FORMATS.get(normalize_dtype(dtype) or "")
    if fmt is None:
        return 0.0
    half_tiny = fmt.smallest_subnormal / 2
    share = (1.0 - beta2) if first_step and 0.0 < beta2 < 1.0 else 1.0
    return math.sqrt(half_tiny / share)


def ulp(x: float, dtype: str) -> float:
    """The spacing of `dtype` numbers at |x| (the gap to the next larger one; subnormal spacing below the
    smallest normal). An update below half of it rounds back to x. NaN for unknown dtypes or non-finite x."""
    fmt = FORMATS.get(normalize_dtype(dtype) or "")
    if fmt is None or not math.isfinite(x):
        return math.nan
    _, e = math.frexp(abs(x)) if x else (0.0, fmt.emin + 1)
    return 2.0 ** (max(e - 1, fmt.emin) - fmt.mant_bits + 1)
