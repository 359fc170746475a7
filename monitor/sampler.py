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
from .layer_sums import Column, LayerSums
from .layers import LayerMap
from .localize import OUTPUT
from .probes import DeviceBatch, Pack, pack, sketch_view
from .probes.moment_lag import queue_rms
from .probes.packed import minus
from .probes.sketch import scale_sketched, sketch_diffs
from .update_signals import LOW_PRECISION, rms, scale_rms, unchanged

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
    # "grad" / "param" -> the first parameter (model order) with non-finite values: exact inside a grouped layer
    first_nonfinite: dict[str, str] = field(default_factory=dict)


def _sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _add_divisor(b: DeviceBatch, name: str, value: torch.Tensor | float | None) -> None:
    """The scale gradients carry, fetched with the batch (a CPU scalar costs no GPU sync)."""
    b.add_scalar(name, value if isinstance(value, torch.Tensor) else torch.tensor(float(value or 1.0)))


def _ratios(sums: list[float | None], totals: list[float]) -> list[float | None]:
    """sums[i] / totals[i] per layer; None where nothing was measured."""
    return [None if s is None or not t else s / t for s, t in zip(sums, totals)]


def _divisor(v: dict[str, list[float | None]], name: str) -> float:
    d = v.get(name, [1.0])[0]
    return d if d is not None and d > 0 and math.isfinite(d) else 1.0


def _l2(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.sqrt(sum(v * v for v in present)) if present else None


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
        self._before_packs: list[Pack] = []
        self._params_were_nonfinite = False
        self._extra: list[str] = []
        self._sums = LayerSums(layers.param_layer, len(layers.names))

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
        packs = pack(grads)  # small gradients copied once, shared by the statistics below
        b.add("g_norm", grads, "norm", packs)
        b.add("g_nonzero", grads, "nonzero", packs)
        if self.master:  # the model's grads may be zeroed in place before the deferred finish()
            b.add("g_nonfinite", grads, "nonfinite", packs)
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
        # small parameters are copied packed (their update is measured exactly from the copy in finish())
        self._before_packs = pack(params) if self.update_ratio else []
        before = self._before_packs or pack(params)
        b.add("p_norm_before", params, "norm", before)
        if self._params_were_nonfinite:  # count now: the copy below becomes the update in finish()
            b.add("p_nonfinite_before", params, "nonfinite", before)
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
        if self.update_ratio:  # the others: a strided sample of large tensors (probes/sketch.py), not a full copy
            packed = {i for pk in self._before_packs for i in pk.positions}
            self._before = [None if g is None or i in packed else sketch_view(p.detach())[0].clone()
                            for i, (p, g) in enumerate(zip(params, grads))]
            self._master_before = [sketch_view(p.detach())[0].clone() for p in self.master]

    def finish(self) -> SampledStep | None:
        """After the update: fetch everything and aggregate per layer. None when nothing is pending.

        Healthy steps need one host transfer. Exact non-finite element counts are computed only for
        tensors whose norm came back non-finite (a second, small transfer on failing steps only)."""
        b, self._batch = self._batch, None
        if b is None:
            return None
        params = self.layers.params
        after = pack(params)
        b.add("p_norm", params, "norm", after)
        if self._before:
            diffs = sketch_diffs(params, self._before)
            diff_packs = minus(after, self._before_packs)
            b.add("update", diffs, "norm", diff_packs)
            low = [pk for pk in diff_packs if pk.flat.dtype in LOW_PRECISION]  # small 16-bit tensors, whole
            b.add("changed", [d if p.dtype in LOW_PRECISION else None for p, d in zip(params, diffs)], "nonzero", low)
            measured = [None if d is None else d.numel() for d in diffs]
            for pk in low:
                for i in pk.positions:
                    measured[i] = params[i].numel()
        rms_factors = queue_rms(b, "rms", self.optimizer, params, self._grads)
        m_rms_factors = queue_rms(b, "m_rms", self.optimizer, self.master, self._master_grads)
        state = [self.optimizer.state.get(p, {}).get("exp_avg_sq") for p in params]
        b.add("s_nonzero", state, "nonzero_positive")
        if self.master:
            b.add("m_norm", self.master, "norm")
            if self._master_before:
                b.add("m_update", sketch_diffs(self.master, self._master_before), "norm")
            b.add("m_s_nonzero", [self.optimizer.state.get(p, {}).get("exp_avg_sq") for p in self.master],
                  "nonzero_positive")
        v = b.fetch()
        scale_sketched(v, "update", params)
        scale_sketched(v, "m_update", self.master)
        if self._before:
            v["unchanged"] = unchanged(v.get("changed", []), v["g_norm"], measured, params)
        # after step() the gradients are unscaled: GradScaler unscales before it, a fused kernel writes its
        # unscaled gradients back (aten fused_adam_utils.cuh, "Conditional Gradient Store"), TRELLIS's
        # master gradients are unscaled by the loop
        scale_rms(v, "rms", rms_factors)
        scale_rms(v, "m_rms", m_rms_factors)
        v.update(self._count_nonfinite(v))
        self._before, self._master_before, self._grads, self._master_grads, self._before_packs = [], [], [], [], []
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
            extra={name: v[name] for name in self._extra}, first_nonfinite=self._first_nonfinite(v))

    def _first_nonfinite(self, v: dict[str, list[float | None]]) -> dict[str, str]:
        names = self.layers.param_names
        out = {}
        for tensor, key in (("grad", "g_nonfinite"), ("param", "p_nonfinite")):
            i = next((i for i, n in enumerate(v[key]) if n), None)
            if i is not None and i < len(names):
                out[tensor] = names[i]
        return out

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
                chosen: list[torch.Tensor | None] = [None] * n
                for i in idx:
                    chosen[i] = tensors[i]
                b.add(key, chosen, stat)
            counted = b.fetch()
            for key, (_, idx, _) in todo.items():
                for i in idx:
                    out[key][i] = counted[key][i]
        return out

    def _layer_rows(self, v: dict[str, list[float | None]], state: list[torch.Tensor | None]) -> list[LayerObs]:
        """One row per layer: norms, counts and ratios over its parameters (vectorised: layer_sums.py)."""
        sums, n = self._sums, len(self.layers.params)
        col = {key: Column.of(v.get(key), n) for key in (
            "g_norm", "p_norm", "p_norm_before", "update", "g_nonfinite", "p_nonfinite", "p_nonfinite_before",
            "g_nonzero", "s_nonzero", "unchanged", "rms")}
        grad = col["g_norm"].present  # absent: no gradient
        has_state = torch.tensor([s is not None for s in state], dtype=torch.bool)
        divisor = _divisor(v, "g_div")
        g_norm, param_norm = sums.l2(col["g_norm"]), sums.l2(col["p_norm"])
        before, upd = sums.l2(col["p_norm_before"]), sums.l2(col["update"], grad)
        g_bad, p_bad = sums.total(col["g_nonfinite"], grad), sums.total(col["p_nonfinite"])
        b_bad, b_unknown = sums.total(col["p_nonfinite_before"]), sums.any_absent(col["p_nonfinite_before"])
        g_nonzero, s_nonzero = sums.total(col["g_nonzero"], grad), sums.total(col["s_nonzero"], has_state)
        numel = [p.numel() for p in self.layers.params]
        g_numel = sums.weights(numel, grad)
        unchanged_share = _ratios(sums.total(col["unchanged"], grad),
                                  sums.weights(numel, col["unchanged"].present & grad))
        rms_mean = _ratios(sums.total(col["rms"], grad), sums.weights(numel, col["rms"].present & grad))
        s_numel = sums.weights([0 if s is None else s.numel() for s in state], has_state)
        has_grad = sums.weights([1] * n, grad)
        if "p_nonfinite_before" not in v:
            b_unknown = [False] * len(b_unknown)
        rows = []
        for li, name in enumerate(self.layers.names):
            rows.append(LayerObs(
                step=self._step, layer=name,
                grad_norm=None if g_norm[li] is None else g_norm[li] / divisor,
                param_norm=param_norm[li],
                update_ratio=None if upd[li] is None or not before[li] else upd[li] / before[li],
                grad_nonfinite=None if not has_grad[li] else int(g_bad[li] or 0),
                param_nonfinite=int(p_bad[li] or 0),
                param_nonfinite_before=None if b_unknown[li] else int(b_bad[li] or 0),
                zero_grad_ratio=None if not g_numel[li] else 1.0 - (g_nonzero[li] or 0) / g_numel[li],
                state_zero_ratio=None if not s_numel[li] else 1.0 - (s_nonzero[li] or 0) / s_numel[li],
                update_unchanged_ratio=unchanged_share[li],
                adam_rms_ratio=None if rms_mean[li] is None else math.sqrt(max(rms_mean[li], 0.0)),
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
