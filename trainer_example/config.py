"""Model presets (`tiny` for CPU tests, `base` matching TRELLIS's SLAT VAE) and the run configuration."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["FAULTS", "MODEL_PRESETS", "PRECISIONS", "ModelConfig", "TrainConfig", "model_preset"]

PRECISIONS: tuple[str, ...] = ("fp32", "inflat_all", "amp", "fp16-naive")
FAULTS: tuple[str, ...] = ("none", "eps-underflow", "overflow", "loss-nan", "lr-spike", "underflow", "grad-corrupt")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the VAE and of its synthetic data.

    `subdiv_channels`: output channels of each decoder subdivide block (one entry = one 2x level).
    `shape_size`: (min, max) shape radius as a fraction of `resolution`; sets the voxel count.
    """

    resolution: int
    in_channels: int
    model_channels: int
    latent_channels: int
    num_blocks: int
    num_heads: int
    subdiv_channels: tuple[int, ...]
    norm_groups: int
    attr_channels: int = 3
    window: int = 8
    mlp_ratio: float = 4.0
    batch_size: int = 2
    pool_size: int = 4
    shape_size: tuple[float, float] = (0.07, 0.11)


MODEL_PRESETS: dict[str, ModelConfig] = {
    # a few hundred voxels per batch of 2, one 2x subdivision: a step takes well under a second on 2 CPU cores.
    "tiny": ModelConfig(
        resolution=32,
        in_channels=16,
        model_channels=64,
        latent_channels=8,
        num_blocks=2,
        num_heads=4,
        subdiv_channels=(32,),
        norm_groups=8,
    ),
    # TRELLIS slat_vae_enc_dec_*_swin8_B_64l8: 768 channels, 12 blocks, 12 heads, 64^3, 8 latent
    # channels, 1024-d input features, mesh-decoder subdivision 768 -> 192 -> 96.
    "base": ModelConfig(
        resolution=64,
        in_channels=1024,
        model_channels=768,
        latent_channels=8,
        num_blocks=12,
        num_heads=12,
        subdiv_channels=(192, 96),
        norm_groups=32,
        shape_size=(0.2, 0.3),
    ),
}


def model_preset(name: str) -> ModelConfig:
    """The preset called `name`; ValueError naming the choices otherwise."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(MODEL_PRESETS)}") from None


@dataclass
class TrainConfig:
    """One training run. `precision="auto"` picks the mode in which `fault` shows its signature
    (faults.FAULT_PRECISION); `eps=None` picks AdamW's eps (see `train.resolve_eps`).

    Steps are counted from 1: `fault_step=k` corrupts the k-th iteration; `fault_rank`: under torchrun,
    only that rank injects the fault (None: every rank). `port=None` disables the
    metrics endpoint of a watched run, 0 picks a free port, "auto" is monitor.watch's default.
    `model` overrides the preset `config`. `fix`: a `monitor.Fix` whose snippet is executed as written
    (setup once, or every iteration, or the loss helpers; one process only).
    `track_stats`: the trainer's own per-step numerics (StepRecord); `track_update_ratio` also copies
    every parameter before each step to measure the update size (off for timing runs).
    `threads`: torch CPU threads during the run (restored after); None: 1 on the CPU, where the tiny
    model is fastest single-threaded and several threads spin against each other on a busy machine.
    """

    config: str = "tiny"
    precision: str = "auto"
    fault: str = "none"
    fault_step: int = 10
    fault_rank: int | None = None
    steps: int = 50
    lr: float = 1e-4
    eps: float | None = None
    amsgrad: bool = False
    clip: float | None = None
    seed: int = 0
    device: str = "auto"
    watch: bool = False
    record: str | None = None
    port: int | str | None = "auto"  # "auto": the monitor's default (9108 + LOCAL_RANK, a free port when busy)
    run: str | None = None
    watch_every: int = 1
    track_stats: bool = True
    track_update_ratio: bool = True
    threads: int | None = None
    model: ModelConfig | None = field(default=None)
    fix: Any = None  # a monitor.Fix, applied as its snippet is written (trainer_example/apply_fix.py)

    def model_config(self) -> ModelConfig:
        return self.model if self.model is not None else model_preset(self.config)

    def with_(self, **changes: object) -> TrainConfig:
        """A copy with `changes` applied."""
        return replace(self, **changes)
