"""Issue #13: critical pre-flight findings are said when watch() starts ("before the first step"), once,
as a warning on logger "monitor" with the first fix's first sentence; a clean set-up logs nothing."""

from __future__ import annotations

import logging

import pytest
import torch

import monitor
from tests.models import Fp16Blocks, watched_step


def preflight_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "monitor" and "pre-flight" in r.getMessage()]


def test_trellis_162_setup_is_warned_about_at_watch(caplog: pytest.LogCaptureFixture) -> None:
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)  # eps rounds to 0 in float16 state
    with caplog.at_level(logging.WARNING, logger="monitor"):
        w = monitor.watch(model, opt, port=None)
        [record] = preflight_lines(caplog)  # before any step
        for step in range(1, 3):
            watched_step(model, opt, w, step)
        w.close()
    assert record.levelno == logging.WARNING and len(preflight_lines(caplog)) == 1  # once, not per step
    text = record.getMessage()
    assert "[CRITICAL] adam_eps_underflow" in text and "rounds to 0" in text
    assert "Fix: Let AdamW update float32 master copies of the float16 weights." in text


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_clean_setup_logs_nothing(dtype: torch.dtype, caplog: pytest.LogCaptureFixture) -> None:
    model = Fp16Blocks(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)  # fp16 holds 1e-4: warnings at most
    with caplog.at_level(logging.WARNING, logger="monitor"), monitor.watch(model, opt, port=None):
        pass
    assert preflight_lines(caplog) == []
