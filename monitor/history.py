"""Observations the diagnosis rules read: one shape whatever the source (live watcher, run record, Prometheus).

Rules are pure functions `History -> list[Finding]`; they never touch torch, SQLite or HTTP.

Conventions:
- `step` counts optimizer iterations as the watcher saw them, skipped ones included (1 = the first).
- Gradient numbers are *unscaled* (divided by the loss scale) unless noted.
- `None` means "not measured" (not sampled, not applicable), never zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .findings import Finding

__all__ = ["Event", "GroupInfo", "History", "LayerInfo", "LayerObs", "RunInfo", "StepObs"]


@dataclass(frozen=True)
class GroupInfo:
    """Hyper-parameters of one optimizer param group (as found at attach time or the last sample)."""

    lr: float
    eps: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0
    amsgrad: bool = False
    fused: bool = False


@dataclass(frozen=True)
class LayerInfo:
    """A module that owns parameters. `dtype` of its parameters; `state_dtype` of its Adam state
    (None: no state yet or not an Adam-family optimizer); `in_optimizer`: the optimizer updates these
    very tensors (False under an fp32 master copy)."""

    dtype: str
    state_dtype: str | None = None
    numel: int = 0
    trainable: bool = True
    in_optimizer: bool = True
    group: int | None = None  # index of the optimizer param group holding these params
    # mean |w| of the layer's 16-bit tensors that are not all zero, measured once at watch() (None: not
    # 16-bit, or not measured); what the pre-flight compares the lr with (half an ulp of it)
    typical_abs: float | None = None
    modules: int = 1  # modules owning parameters measured as this layer (> 1: grouped, see monitor/layers.py)


@dataclass(frozen=True)
class RunInfo:
    run: str = "default"
    rank: int = 0
    torch_version: str = ""
    device: str = "cpu"
    optimizer: str = ""  # class name, e.g. "AdamW"
    groups: tuple[GroupInfo, ...] = ()
    scaler: str = "none"  # "grad_scaler" | "custom" | "none" | "disabled"
    master_weights: bool = False  # the optimizer's params are not the model's (fp32 master copy)
    autocast: str | None = None  # dtype of torch.autocast seen active in the model's forward
    layers: dict[str, LayerInfo] = field(default_factory=dict)
    every: int = 1
    started: float = 0.0
    local_rank: int = 0  # multi-process jobs (torch.distributed / torchrun): see monitor/distributed.py
    world_size: int = 1
    run_id: str = ""  # TORCHELASTIC_RUN_ID
    restart_count: int = 0  # TORCHELASTIC_RESTART_COUNT
    trainer: str = ""  # the trainer an integration watched ("trellis": watch_trellis); "" = unknown


@dataclass(frozen=True)
class StepObs:
    step: int
    time: float = 0.0
    sampled: bool = True  # per-layer statistics were computed for this step
    skipped: bool = False  # the update was not applied (loss scaler found inf/NaN, the loop, or the guard)
    skipped_total: int = 0
    loss: float | None = None  # mean of the losses observed in the iteration (every micro-batch)
    loss_scale: float | None = None
    grad_norm_total: float | None = None  # global, unscaled, before clipping
    grad_norm_applied: float | None = None  # global, what optimizer.step() received (after clipping)
    grad_nonfinite: int | None = None  # elements, all layers
    param_nonfinite: int | None = None  # elements after the update, all layers
    lr: tuple[float, ...] = ()
    eps: tuple[float | None, ...] = ()
    # why a skipped step was skipped: "scaler", "loss_scale" (a hand-made scale fell), "user"
    # (step_skipped()), or the guard's "nonfinite_grad" / "nonfinite_update"; a sampled skipped
    # step's rows show the update as computed
    skip_reason: str | None = None


@dataclass(frozen=True)
class LayerObs:
    step: int
    layer: str
    grad_norm: float | None = None
    param_norm: float | None = None
    update_ratio: float | None = None  # norm(update) / norm(param before)
    grad_nonfinite: int | None = None
    param_nonfinite: int | None = None  # after the update
    param_nonfinite_before: int | None = None
    zero_grad_ratio: float | None = None
    state_zero_ratio: float | None = None  # share of exp_avg_sq elements == 0 after the update
    activation_nonfinite: int | None = None  # only while localisation is armed
    # share of the 16-bit (fp16/bf16) weight elements the step left exactly unchanged, over the tensors
    # whose gradient was non-zero (on the update ratio's sketch for large tensors; None: not 16-bit)
    update_unchanged_ratio: float | None = None
    # Adam second-moment lag: RMS over elements of g^2 / max(v_hat, eps^2), v_hat the bias-corrected
    # exp_avg_sq after this step's update (max_exp_avg_sq with amsgrad), g the gradient the optimizer
    # used (Wortsman et al. 2023; ~1 when v tracks g^2, >> 1 when gradients outgrew it)
    adam_rms_ratio: float | None = None


@dataclass(frozen=True)
class Event:
    """Something that happened once: `kind` is "nonfinite" (first non-finite value of a `tensor`:
    grad | param | loss | activation | input; for "input", `layer` is the entry module (None: the
    model) and `detail` has input (as passed: "args[0]", "kwargs['cond']"), shape, dtype, nonfinite,
    numel), "localized" (the module call that made the first non-finite forward output or backward
    gradient; `detail` has direction, dtype, module_type, own_code, parent, after, fed_to, and
    in_absmax/out_absmax or grad_out_absmax/grad_in_absmax), "batch_saved" (save_bad_batch; `detail`
    has path, reason, calls, weights_only), "error", "guard_stop" (the guard raised GuardStop;
    `detail` has reason, finding, message), or "params_changed" (parameters replaced, added or converted
    after watch(); `detail` has layers, params, added, removed, not_in_optimizer, not_in_optimizer_count),
    or what the run record says about itself (monitor/record/gaps.py): "record_gap" (`detail`: first,
    last, observations, reason - not in the record) and "record_unclosed" (`detail`: last_step - no
    clean close)."""

    step: int
    kind: str
    layer: str | None = None
    tensor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class History:
    run: RunInfo = field(default_factory=RunInfo)
    steps: list[StepObs] = field(default_factory=list)
    layers: list[LayerObs] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    preflight: list[Finding] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return self.steps[-1].step if self.steps else 0

    def layer_rows(self, step: int) -> list[LayerObs]:
        return [r for r in self.layers if r.step == step]

    def sampled_steps(self) -> list[StepObs]:
        return [s for s in self.steps if s.sampled]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": asdict(self.run),
            "steps": [asdict(s) for s in self.steps],
            "layers": [asdict(r) for r in self.layers],
            "events": [asdict(e) for e in self.events],
            "preflight": [f.to_dict() for f in self.preflight],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        run = dict(d.get("run", {}))
        run["groups"] = tuple(
            GroupInfo(**{**g, "betas": tuple(g["betas"]) if g.get("betas") else None})
            for g in run.get("groups", ())
        )
        run["layers"] = {k: LayerInfo(**v) for k, v in run.get("layers", {}).items()}
        return cls(
            run=RunInfo(**run),
            steps=[StepObs(**{**s, "lr": tuple(s.get("lr", ())), "eps": tuple(s.get("eps", ()))})
                   for s in d.get("steps", ())],
            layers=[LayerObs(**r) for r in d.get("layers", ())],
            events=[Event(**e) for e in d.get("events", ())],
            preflight=[Finding.from_dict(f) for f in d.get("preflight", ())],
        )
