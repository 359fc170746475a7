"""One sampled optimizer step: statistics before the update (`begin`) and after it (`finish`).

Everything is queued on a DeviceBatch and fetched in `finish()` with one host transfer per device.
`begin` runs in the optimizer's step pre-hook; `finish` in its post-hook, or, when the optimizer
holds an fp32 master copy (the model's parameters are copied back after `step()` returns), at the
model's next forward. Nothing here writes to a parameter, gradient or optimizer state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .history import LayerObs
from .layers import LayerMap
from .localize import OUTPUT
from .probes import DeviceBatch, sketch_view
from .probes.moment_lag import queue_rms
from .update_signals import LOW_PRECISION, rms, scale_rms, share, unchanged

__all__ = ["ROOT", "SampledStep", "StepSampler"]

ROOT = OUTPUT  # pseudo-layer of the model's own output (activation_nonfinite only)


@dataclass(frozen=True)
class SampledStep:
    step: int
    rows: tuple[LayerObs, ...]
    loss: float | None
    loss_scale: float | None
    grad_norm_total: float | None  # before clipping (from the end of backward when captured)
    grad_norm_applied: float | None  # what optimizer.step() received
    grad_nonfinite: int
    param_nonfinite: int
    extra: dict[str, list[float | None]] = field(default_factory=dict)  # begin(extra=...) values, fetched


def _sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _count(values: list[float | None]) -> int | None:
    """Sum of counts; None when any is unknown."""
    return None if any(x is None for x in values) else int(sum(values))  # type: ignore[arg-type]


def _add_divisor(b: DeviceBatch, name: str, value: torch.Tensor | float | None) -> None:
    """The scale gradients carry, fetched with the batch (a CPU scalar costs no GPU sync)."""
    b.add_scalar(name, value if isinstance(value, torch.Tensor) else torch.tensor(float(value or 1.0)))


def _divisor(v: dict[str, list[float | None]], name: str) -> float:
    d = v.get(name, [1.0])[0]
    return d if d is not None and d > 0 and math.isfinite(d) else 1.0


def _l2(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.sqrt(sum(v * v for v in present)) if present else None


def _scale_sketched(v: dict[str, list[float | None]], key: str, tensors: list[torch.Tensor]) -> None:
    """Norms measured on a sketch (probes/sketch.py) scaled to the whole tensor, in place."""
    if key in v:
        v[key] = [None if x is None else x * math.sqrt(sketch_view(t)[1]) for x, t in zip(v[key], tensors)]


class StepSampler:
    """Per-layer statistics of `layers` (the model's parameters) and of the optimizer's own params
    when they are not the model's (`master`: reported as layer "[master]")."""

    def __init__(self, layers: LayerMap, optimizer: torch.optim.Optimizer, update_ratio: bool) -> None:
        self.layers = layers
        self.optimizer = optimizer
        self.update_ratio = update_ratio
        model_ids = {id(p) for p in layers.params}
        held = [p for g in optimizer.param_groups for p in g["params"]]
        # an fp32 master copy (TRELLIS inflat_all) holds none of the model's parameters; tensors held next
        # to the model's (a loss's own weights, a replaced module's old ones) are no master copy
        self.master = [] if any(id(p) in model_ids for p in held) else held
        self._batch: DeviceBatch | None = None
        self._capture: DeviceBatch | None = None
        self._step = 0
        self._before: list[torch.Tensor | None] = []
        self._master_before: list[torch.Tensor | None] = []
        self._grads: list[torch.Tensor | None] = []
        self._master_grads: list[torch.Tensor | None] = []
        self._params_were_nonfinite = False
        self._extra: list[str] = []

    @property
    def pending(self) -> bool:
        return self._batch is not None

    @property
    def step(self) -> int:
        """The step of the pending (or last) sample."""
        return self._step

    def capture(self, grads_scaled_by: torch.Tensor | float = 1.0) -> None:
        """At the end of a backward pass (OutputProbe): the per-layer gradient statistics as backward
        left them, before clipping or unscaling. A later capture in the same iteration (gradient
        accumulation) replaces an earlier one; `begin()` uses the last. `grads_scaled_by`: the loss
        scale the gradients carry now (a device tensor for GradScaler: no sync)."""
        grads = [p.grad for p in self.layers.params]
        b = DeviceBatch()
        b.add("g_norm", grads, "norm")
        b.add("g_nonzero", grads, "nonzero")
        if self.master:  # the model's grads may be zeroed in place before the deferred finish()
            b.add("g_nonfinite", grads, "nonfinite")
        _add_divisor(b, "g_div", grads_scaled_by)
        self._capture = b

    def discard_capture(self) -> None:
        self._capture = None

    def begin(self, step: int, loss: torch.Tensor | None, scale: torch.Tensor | float | None,
              grads_scaled_by: torch.Tensor | float = 1.0, output_nonfinite: torch.Tensor | None = None,
              extra: dict[str, torch.Tensor] | None = None) -> None:
        """Before the update. `grads_scaled_by`: the loss scale the gradients still carry at
        `optimizer.step()` (a fused optimizer under GradScaler unscales inside its kernel);
        `output_nonfinite`: the entry outputs' NaN+Inf count this iteration (OutputProbe); `extra`:
        1-d device tensors fetched with the same transfer (SampledStep.extra; InputProbe.fold).

        With a capture from the end of backward, per-layer gradient numbers come from it (before
        clipping) and the norm of the gradients handed to the optimizer is measured here as
        `applied`; without one, everything is measured here."""
        captured, self._capture = self._capture, None
        params = self.layers.params
        grads = [p.grad for p in params]
        if captured is None:
            self.capture(grads_scaled_by)
            captured, self._capture = self._capture, None
        elif not self.master:
            captured.add("g_applied", grads, "norm")
            _add_divisor(captured, "g_applied_div", grads_scaled_by)
        b = self._batch = captured
        self._step = step
        if self.master:
            b.add("m_g_norm", [p.grad for p in self.master], "norm")
            b.add("m_norm_before", self.master, "norm")
        b.add("p_norm_before", params, "norm")
        if self._params_were_nonfinite:  # count now: the copy below becomes the update in finish()
            b.add("p_nonfinite_before", params, "nonfinite")
        if loss is not None:
            b.add_scalar("loss", loss)
        if isinstance(scale, torch.Tensor):
            b.add_scalar("scale", scale)
        if output_nonfinite is not None:
            b.add_scalar("out_nonfinite", output_nonfinite)
        self._extra = list(extra or ())
        for name, values in (extra or {}).items():
            b.add_values(name, values)
        self._scale = None if isinstance(scale, torch.Tensor) else scale
        self._grads, self._master_grads = grads, [p.grad for p in self.master]
        if self.update_ratio:  # a strided sample of large tensors (probes/sketch.py), not a full copy
            self._before = [sketch_view(p.detach())[0].clone() if g is not None else None
                            for p, g in zip(params, grads)]
            self._master_before = [sketch_view(p.detach())[0].clone() for p in self.master]

    def finish(self) -> SampledStep | None:
        """After the update: fetch everything and aggregate per layer. None when nothing is pending.

        Healthy steps need one host transfer. Exact non-finite element counts are computed only for
        tensors whose norm came back non-finite (a second, small transfer on failing steps only)."""
        b, self._batch = self._batch, None
        if b is None:
            return None
        params = self.layers.params
        b.add("p_norm", params, "norm")
        if self._before:
            diffs = self._diffs(params, self._before)
            b.add("update", diffs, "norm")
            b.add("changed", [d if p.dtype in LOW_PRECISION else None for p, d in zip(params, diffs)], "nonzero")
        rms_factors = queue_rms(b, "rms", self.optimizer, params, self._grads)
        m_rms_factors = queue_rms(b, "m_rms", self.optimizer, self.master, self._master_grads)
        state = [self.optimizer.state.get(p, {}).get("exp_avg_sq") for p in params]
        b.add("s_nonzero", state, "nonzero_positive")
        if self.master:
            b.add("m_norm", self.master, "norm")
            if self._master_before:
                b.add("m_update", self._diffs(self.master, self._master_before), "norm")
            b.add("m_s_nonzero", [self.optimizer.state.get(p, {}).get("exp_avg_sq") for p in self.master],
                  "nonzero_positive")
        v = b.fetch()
        _scale_sketched(v, "update", params)
        _scale_sketched(v, "m_update", self.master)
        v["unchanged"] = unchanged(v.get("changed", []), v["g_norm"], self._before, params)
        # after step() the gradients are unscaled: GradScaler unscales before it, a fused kernel writes its
        # unscaled gradients back (aten fused_adam_utils.cuh, "Conditional Gradient Store"), TRELLIS's
        # master gradients are unscaled by the loop
        scale_rms(v, "rms", rms_factors)
        scale_rms(v, "m_rms", m_rms_factors)
        v.update(self._count_nonfinite(v))
        self._before, self._master_before, self._grads, self._master_grads = [], [], [], []
        self._params_were_nonfinite = any(v["p_nonfinite"])
        rows = self._layer_rows(v, state)
        if self.master:
            rows.append(self._master_row(v))
        if "out_nonfinite" in v:
            rows.append(LayerObs(step=self._step, layer=ROOT, activation_nonfinite=int(v["out_nonfinite"][0] or 0)))
        scale = v["scale"][0] if "scale" in v else self._scale
        grad_norm = _l2([r.grad_norm for r in rows if r.layer not in ("[master]", ROOT)])
        return SampledStep(
            step=self._step, rows=tuple(rows), loss=v["loss"][0] if "loss" in v else None, loss_scale=scale,
            grad_norm_total=grad_norm, grad_norm_applied=self._applied_norm(v, grad_norm),
            grad_nonfinite=int(_sum(v["g_nonfinite"]) or 0), param_nonfinite=int(_sum(v["p_nonfinite"]) or 0),
            extra={name: v[name] for name in self._extra})

    def _applied_norm(self, v: dict[str, list[float | None]], grad_norm: float | None) -> float | None:
        """Global norm of the gradients the optimizer received (after clipping and unscaling)."""
        if self.master:
            return _l2(v.get("m_g_norm", []))
        if "g_applied" in v:
            norm = _l2(v["g_applied"])
            return None if norm is None else norm / _divisor(v, "g_applied_div")
        return grad_norm  # measured at optimizer.step() only: the same gradients

    def _count_nonfinite(self, v: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
        """NaN+Inf counts: 0 where the norm is finite (no work), counted where it is not.

        Also exact non-zero counts where the fused count came back NaN (CUDA, NaN gradients).
        Parameters that were non-finite before the update are counted in begin() when the previous
        sample ended non-finite; otherwise (they broke between two samples) that count is None."""
        n = len(self.layers.params)

        def bad(key: str) -> list[int]:
            return [i for i, x in enumerate(v[key]) if x is not None and not math.isfinite(x)]

        def zeros(norm_key: str) -> list[float | None]:
            return [None if v[norm_key][i] is None else 0.0 for i in range(n)]

        out: dict[str, list[float | None]] = {"p_nonfinite": zeros("p_norm")}
        todo = {"p_nonfinite": (self.layers.params, bad("p_norm"), "nonfinite")}
        if self._grads:  # fused non-zero counts are NaN where a gradient holds NaN: count exactly
            out["g_nonzero"] = list(v["g_nonzero"])
            todo["g_nonzero"] = (self._grads, bad("g_nonzero"), "nonzero_exact")
        if "g_nonfinite" not in v:
            out["g_nonfinite"] = zeros("g_norm")
            todo["g_nonfinite"] = (self._grads, bad("g_norm"), "nonfinite")
        if "p_nonfinite_before" not in v:
            out["p_nonfinite_before"] = zeros("p_norm_before")
            for i in bad("p_norm_before"):
                out["p_nonfinite_before"][i] = None
        if any(idx for _, idx, _ in todo.values()):
            b = DeviceBatch()
            for key, (tensors, idx, stat) in todo.items():
                b.add(key, [tensors[i] if i in idx else None for i in range(n)], stat)
            counted = b.fetch()
            for key, (_, idx, _) in todo.items():
                for i in idx:
                    out[key][i] = counted[key][i]
        return out

    @staticmethod
    def _diffs(after: list[torch.Tensor] | tuple[torch.Tensor, ...],
               before: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """before - after (= minus the update: same norm) over the sketched elements, written into the
        `before` copies: one fused kernel, no new memory. None where there was no `before`."""
        keep = [i for i, o in enumerate(before) if o is not None]
        if not keep:  # a step with no gradient at all (optimizer.step() without a backward)
            return list(before)
        torch._foreach_sub_([before[i] for i in keep],  # type: ignore[misc]
                            [sketch_view(after[i].detach())[0] for i in keep])
        return list(before)

    def _layer_rows(self, v: dict[str, list[float | None]], state: list[torch.Tensor | None]) -> list[LayerObs]:
        n = len(self.layers.names)
        idx: list[list[int]] = [[] for _ in range(n)]
        for i, li in enumerate(self.layers.param_layer):
            idx[li].append(i)
        params = self.layers.params
        divisor = _divisor(v, "g_div")
        rows = []
        for li, members in enumerate(idx):
            with_grad = [i for i in members if v["g_norm"][i] is not None]  # None: no gradient
            pick = lambda key, ms=members: [v[key][i] for i in ms] if key in v else []  # noqa: E731
            g_numel = sum(params[i].numel() for i in with_grad)
            s_members = [i for i in members if state[i] is not None]
            s_numel = sum(state[i].numel() for i in s_members)  # type: ignore[union-attr]
            g_norm = _l2(pick("g_norm", with_grad))
            before = _l2(pick("p_norm_before"))
            upd = _l2(pick("update", with_grad))
            rows.append(LayerObs(
                step=self._step, layer=self.layers.names[li],
                grad_norm=None if g_norm is None else g_norm / divisor,
                param_norm=_l2(pick("p_norm")),
                update_ratio=None if upd is None or not before else upd / before,
                grad_nonfinite=None if not with_grad else int(_sum(pick("g_nonfinite", with_grad)) or 0),
                param_nonfinite=int(_sum(pick("p_nonfinite")) or 0),
                param_nonfinite_before=_count(pick("p_nonfinite_before")),
                zero_grad_ratio=None if not g_numel else 1.0 - (_sum(pick("g_nonzero", with_grad)) or 0) / g_numel,
                state_zero_ratio=None if not s_numel else 1.0 - (_sum(pick("s_nonzero", s_members)) or 0) / s_numel,
                update_unchanged_ratio=share(pick("unchanged", with_grad), [params[i].numel() for i in with_grad]),
                adam_rms_ratio=rms(pick("rms", with_grad), [params[i].numel() for i in with_grad]),
            ))
        return rows

    def _master_row(self, v: dict[str, list[float | None]]) -> LayerObs:
        s_numel = sum(p.numel() for p in self.master if "exp_avg_sq" in self.optimizer.state.get(p, {}))
        before, upd = _l2(v.get("m_norm_before", [])), _l2(v.get("m_update", []))
        return LayerObs(
            step=self._step, layer="[master]", grad_norm=_l2(v.get("m_g_norm", [])),
            param_norm=_l2(v.get("m_norm", [])),
            update_ratio=None if upd is None or not before else upd / before,
            state_zero_ratio=None if not s_numel else 1.0 - (_sum(v.get("m_s_nonzero", [])) or 0) / s_numel,
            adam_rms_ratio=rms(v.get("m_rms", []), [p.numel() for p in self.master]))
