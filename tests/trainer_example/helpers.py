"""Small, fast run configurations for the trainer tests."""

from __future__ import annotations

from dataclasses import replace

from monitor.example.config import MODEL_PRESETS, TrainConfig

# One fixed batch (a pool of exactly one batch), so a few steps show a decreasing loss.
FIXED_BATCH = replace(MODEL_PRESETS["tiny"], pool_size=2)


def tiny(**changes: object) -> TrainConfig:
    """A tiny CPU run on one fixed batch; `changes` override TrainConfig fields."""
    base = TrainConfig(config="tiny", device="cpu", steps=3, fault_step=3, model=FIXED_BATCH, port=None)
    return base.with_(**changes)
