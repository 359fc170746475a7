"""numerics: exact rounding against torch, eps and exp_avg_sq underflow thresholds."""

from __future__ import annotations

import math
import random

import pytest
import torch

from monitor.diagnosis.numerics import (
    FORMATS,
    adam_state_underflow_grad,
    eps_is_subnormal,
    eps_rounds_to_zero,
    normalize_dtype,
    round_to,
)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_round_to_matches_torch(dtype: str) -> None:
    rng = random.Random(0)
    tdtype = getattr(torch, dtype)
    values = [rng.choice((-1, 1)) * 10 ** rng.uniform(-45, 39) for _ in range(3000)]
    values += [2**-25, 2**-25 * (1 + 2**-20), 2**-24, 65504.0, 65519.0, 65520.0, 1e-8, 1e-4]
    for x in values:
        x32 = float(torch.tensor(x, dtype=torch.float32))  # torch rounds via float32; so do we here
        expected = torch.tensor(x32, dtype=torch.float32).to(tdtype).item()
        assert round_to(x32, dtype) == expected, (dtype, x32)


def test_format_constants_match_torch() -> None:
    for name, fmt in FORMATS.items():
        info = torch.finfo(getattr(torch, name))
        assert fmt.max == info.max
        assert fmt.smallest_normal == info.smallest_normal
        assert fmt.smallest_subnormal == info.smallest_normal * info.eps


def test_eps_rounding_thresholds_fp16() -> None:
    assert eps_rounds_to_zero(1e-8, "float16")
    assert eps_rounds_to_zero(2**-25, "torch.float16")  # exactly half the smallest subnormal: ties to even (0)
    assert not eps_rounds_to_zero(2**-25 * (1 + 1e-6), "half")  # just above: rounds up to 2**-24
    assert eps_is_subnormal(2**-25 * (1 + 1e-6), "fp16")
    assert eps_is_subnormal(6e-5, "float16")
    assert not eps_is_subnormal(2**-14, "float16")  # smallest normal
    assert not eps_is_subnormal(1e-4, "float16") and not eps_rounds_to_zero(1e-4, "float16")
    assert not eps_rounds_to_zero(1e-8, "bfloat16") and not eps_is_subnormal(1e-8, "bfloat16")
    assert not eps_rounds_to_zero(0.0, "float16")


def test_adam_state_underflow_matches_torch_adam() -> None:
    """Below the threshold exp_avg_sq is exactly 0 after one real AdamW step in fp16; above, it is not."""
    limit = adam_state_underflow_grad("float16", 0.999)
    assert limit == pytest.approx(math.sqrt(2**-25 / 1e-3))
    grads = torch.tensor([limit * 0.97, limit * 1.03], dtype=torch.float16)
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    opt = torch.optim.AdamW([p], lr=1e-4, eps=1e-4)
    p.grad = grads
    opt.step()
    v = opt.state[p]["exp_avg_sq"]
    assert v[0].item() == 0.0 and v[1].item() > 0.0
    assert adam_state_underflow_grad("float16", first_step=False) == pytest.approx(math.sqrt(2**-25))
    assert adam_state_underflow_grad("int8") == 0.0


def test_normalize_dtype() -> None:
    assert normalize_dtype("torch.float16") == "float16"
    assert normalize_dtype("BF16") == "bfloat16"
    assert normalize_dtype(None) is None
    assert normalize_dtype(3) is None
