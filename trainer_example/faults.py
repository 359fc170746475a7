"""Faults the trainer can inject, each with its own signature for the monitor's diagnosis.

Steps count from 1; `k` is `--fault-step`. "auto" precision is the mode each fault is meant for.

| fault         | auto mode  | injection                          | signature (expected step)                 |
|---------------|------------|------------------------------------|-------------------------------------------|
| none          | inflat_all | nothing                            | finite, decreasing loss                   |
| eps-underflow | fp16-naive | AdamW eps 1e-8 (PyTorch default)   | step 1: grads finite, then every fp16     |
|               |            | on fp16 params (TRELLIS #162)      | block param NaN/Inf right after the       |
|               |            |                                    | update, fp32 layers finite; loss NaN      |
|               |            |                                    | from step 2                               |
| overflow      | fp16-naive | from k, encoder block 0 attention  | step k: first non-finite activation is    |
|               |            | logits x1e6: fp16 passes 65504     | encoder.blocks.0.attn.core; loss, grads   |
|               |            |                                    | and (no scaler) params non-finite from k  |
| loss-nan      | inflat_all | at k only, 0 * log(0) in the       | step k: loss NaN, outputs finite, grads   |
|               |            | volume loss term (empty target)    | NaN, step skipped, log_scale - 1; resumes |
| lr-spike      | fp32       | lr x1000 from k                    | from k: optimizer lr x1000, update/param  |
|               |            |                                    | ratio ~1000x higher, loss climbs          |
| underflow     | fp16-naive | from k, loss x 2**-24 before       | from k: ~all fp16 param grads exactly     |
|               |            | backward, no scaler                | zero, fp32 head grads non-zero            |
| grad-corrupt  | fp32       | from k, the decoder out_layer's    | from k, with --fault-rank under DDP: that |
|               |            | grads x(1 + 1e-3) after backward   | rank's global grad norm differs from the  |
|               |            | (after DDP's all-reduce)           | others' (silent data corruption)          |

`--fault-rank R` (TrainConfig.fault_rank) injects the fault on rank R only; the other ranks run clean.
Under DDP a non-finite gradient on one rank reaches every rank through the all-reduce, while its
loss and activations stay that rank's own: the cross-rank diagnosis tells the two apart.

In other precision modes the same injection gives the mode's own reaction: with `inflat_all` or
`amp`, non-finite gradients (overflow, loss-nan) skip the step and lower the loss scale (every step
for a persistent overflow: a collapsing scale); in `fp32` an overflow of 1e6-scaled logits does not
happen at all and eps 1e-8 is harmless, which is the point of those modes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import FAULTS

__all__ = ["FAULT_PRECISION", "OVERFLOW_LOGIT_GAIN", "UNDERFLOW_LOSS_FACTOR", "FaultPlan"]

FAULT_PRECISION: dict[str, str] = {
    "none": "inflat_all",
    "eps-underflow": "fp16-naive",
    "overflow": "fp16-naive",
    "loss-nan": "inflat_all",
    "lr-spike": "fp32",
    "underflow": "fp16-naive",
    "grad-corrupt": "fp32",
}
OVERFLOW_LOGIT_GAIN = 1e6
UNDERFLOW_LOSS_FACTOR = 2.0**-24
LR_SPIKE_FACTOR = 1000.0
GRAD_CORRUPT_FACTOR = 1.0 + 1e-3


@dataclass(frozen=True)
class FaultPlan:
    """What `fault` does at each step (1-based). Pure: the trainer applies the returned values."""

    fault: str
    step: int

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose one of {', '.join(FAULTS)}")
        if self.step < 1:
            raise ValueError(f"fault step must be >= 1 (steps count from 1), got {self.step}")

    def _active(self, name: str, step: int) -> bool:
        return self.fault == name and step >= self.step

    def logit_gain(self, step: int) -> float:
        """Gain for encoder block 0's attention logits at `step`."""
        return OVERFLOW_LOGIT_GAIN if self._active("overflow", step) else 1.0

    def empty_target(self, step: int) -> bool:
        """Whether the loss sees an empty target at `step` (only at the fault step itself)."""
        return self.fault == "loss-nan" and step == self.step

    def loss_factor(self, step: int) -> float:
        """Factor applied to the loss before backward (and observed as the loss)."""
        return UNDERFLOW_LOSS_FACTOR if self._active("underflow", step) else 1.0

    def lr_factor(self, step: int) -> float:
        """Factor on the configured learning rate for `step`'s optimizer update."""
        return LR_SPIKE_FACTOR if self._active("lr-spike", step) else 1.0

    def grad_factor(self, step: int) -> float:
        """Factor on the decoder out_layer's gradients after backward (and DDP's all-reduce)."""
        return GRAD_CORRUPT_FACTOR if self._active("grad-corrupt", step) else 1.0

    def on_rank(self, rank: int, fault_rank: int | None) -> FaultPlan:
        """This plan where `rank` injects it (`fault_rank` None: every rank), else no fault."""
        return self if fault_rank is None or fault_rank == rank else FaultPlan("none", self.step)
