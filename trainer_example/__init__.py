"""A SLAT VAE training run (TRELLIS's sparse-voxel transformer VAE, scaled down) that reproduces
mixed-precision failures on demand: the patient slat-monitor is tested and demonstrated on.

    from monitor.example.train import TrainConfig, run
    result = run(TrainConfig(config="tiny", precision="fp16-naive", fault="eps-underflow", steps=3))
    result.steps[0].nonfinite_params   # every fp16 block parameter after step 1 (TRELLIS #162)

Command line: `python -m monitor.example.train --help`. Importing the model imports spconv (seconds).
"""

from __future__ import annotations

__all__ = ["loop", "train"]
