"""Prometheus export: one custom collector over the latest Snapshot, built at scrape time.

`collect()` runs in the HTTP server's thread, reads the snapshot reference once and builds fresh
metric families; series of layers that vanished simply aren't emitted. The training thread never
touches prometheus_client objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..findings import Finding
from ..history import Event, LayerInfo, RunInfo
from ..snapshot import Counters, Snapshot
from .grouping import group_name, group_rows, should_group

__all__ = ["SnapshotCollector"]

_PER_LAYER = (
    ("slatmon_grad_norm", "grad_norm", "Per-layer L2 norm of the unscaled gradients."),
    ("slatmon_param_norm", "param_norm", "Per-layer L2 norm of the parameters after the update."),
    ("slatmon_update_ratio", "update_ratio", "Per-layer norm(update) / norm(parameters)."),
    ("slatmon_zero_grad_ratio", "zero_grad_ratio", "Per-layer share of exactly-zero gradient elements."),
    ("slatmon_adam_state_zero_ratio", "state_zero_ratio", "Per-layer share of Adam exp_avg_sq elements equal to 0."),
)
_NONFINITE = (("grad", "grad_nonfinite"), ("param", "param_nonfinite"), ("activation", "activation_nonfinite"))


class SnapshotCollector(Collector):
    """Exports `snapshot()`, `counters()` and `findings()` (callables, read at scrape time)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Callable[[], Counters],
        findings: Callable[[], list[Finding]],
        info: Callable[[], RunInfo],
        registry: CollectorRegistry | None = None,
        events: Callable[[], list[Event]] = list,
        export_layers: str = "auto",
    ) -> None:
        self._snapshot, self._counters, self._findings, self._info = snapshot, counters, findings, info
        self._events, self._export_layers = events, export_layers
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # no describe-time evaluation: families depend on the live snapshot

    def collect(self) -> Iterator[Metric]:
        snap, counters = self._snapshot(), self._counters()
        base = {"run": snap.run, "rank": str(snap.rank)}
        yield from self._globals(snap, counters, base)
        shown, folded = self._grouped(snap)
        yield from self._ranks(snap, base, folded)
        yield from self._layers(shown, base)
        yield from self._optimizer(snap, base)
        yield from self._finding_families(base)
        yield self._run_info(base)

    def _globals(self, snap: Snapshot, c: Counters, base: dict[str, str]) -> Iterator[Metric]:
        keys, vals = list(base), list(base.values())

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            """No sample while the value is unknown: a NaN sample always means a NaN was observed."""
            g = GaugeMetricFamily(name, doc, labels=keys)
            if value is not None:
                g.add_metric(vals, float(value))
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=keys)
            m.add_metric(vals, value)
            return m

        last = snap.last
        yield gauge("slatmon_step", "Last optimizer step seen (skipped steps included).", c.step)
        yield gauge("slatmon_loss", "Last loss observed (on a sampled or a skipped step).", snap.loss)
        yield gauge("slatmon_output_nonfinite_elements", "NaN+Inf elements of the model's outputs in the last "
                    "step seen (sampled or skipped), when they were checked.", snap.output_nonfinite)
        yield gauge("slatmon_sampled_step", "The step the per-layer series describe (the last sampled step).",
                    last.step if last else None)
        yield gauge("slatmon_loss_scale", "GradScaler scale or the custom loss scale.", c.loss_scale)
        yield gauge("slatmon_grad_norm_global", "Global L2 norm of the unscaled gradients (before clipping).",
                    last.grad_norm_total if last else None)
        yield gauge("slatmon_grad_norm_applied", "Global L2 norm of the gradients optimizer.step() received "
                    "(unscaled, after clipping).", last.grad_norm_applied if last else None)
        yield gauge("slatmon_last_step_timestamp_seconds", "Unix time of the last optimizer step seen.",
                    c.time or None)
        yield counter("slatmon_skipped_steps", "Optimizer steps not applied: skipped by the loss scaler or kept "
                      "out by the guard.", c.skipped_steps)
        yield counter("slatmon_monitor_seconds", "Time the monitor spent in the training thread.",
                      c.monitor_seconds)
        yield counter("slatmon_monitor_errors", "Errors caught inside the monitor.", c.errors)
        steps = CounterMetricFamily("slatmon_nonfinite_steps", "Sampled steps with any non-finite value.",
                                    labels=[*keys, "tensor"])
        for tensor, n in c.nonfinite_steps.items():
            steps.add_metric([*vals, tensor], n)
        yield steps

    def _grouped(self, snap: Snapshot) -> tuple[Snapshot, int]:
        """The snapshot as exported, and how many layers were folded: per-layer rows grouped by block
        for large jobs (export/grouping.py)."""
        if not should_group(self._export_layers, self._info().world_size):
            return snap, 0
        g = group_rows(snap.rows, snap.layer_info)
        first = None
        if snap.param_nonfinite_first is not None:
            first = {}
            for layer, n in snap.param_nonfinite_first.items():
                name = g.groups.get(layer, group_name(layer))
                first[name] = first.get(name, 0) + n
        info: dict[str, LayerInfo] = {}
        for layer, li in snap.layer_info.items():
            name = g.groups.get(layer, group_name(layer))
            seen = info.get(name)
            info[name] = li if seen is None or (seen.dtype, seen.state_dtype) == (li.dtype, li.state_dtype) else (
                LayerInfo(dtype="mixed", state_dtype="mixed"))
        return dataclasses.replace(snap, rows=g.rows, param_nonfinite_first=first, layer_info=info), g.folded

    def _ranks(self, snap: Snapshot, base: dict[str, str], folded: int) -> Iterator[Metric]:
        """What a cross-rank comparison needs from each rank, without a collective (besides
        slatmon_sampled_step, so ranks are compared on the same step): the first step of a rank-local
        non-finite value (loss or activation), and how many layers are folded into groups."""
        keys, vals = list(base), list(base.values())
        local = GaugeMetricFamily(
            "slatmon_nonfinite_local_first_step",
            "First step whose loss or activations were non-finite on this rank (absent: none so far).",
            labels=keys)
        steps = [e.step for e in self._events() if e.kind == "localized" or (
            e.kind == "nonfinite" and e.tensor in ("loss", "activation"))]
        if steps:
            local.add_metric(vals, min(steps))
        yield local
        grouped = GaugeMetricFamily("slatmon_layers_grouped",
                                    "Layers exported inside a block group (layer=\"<block>.*\") instead of alone.",
                                    labels=keys)
        grouped.add_metric(vals, folded)
        yield grouped

    def _layers(self, snap: Snapshot, base: dict[str, str]) -> Iterator[Metric]:
        keys, vals = [*base, "layer"], list(base.values())
        for name, attr, doc in _PER_LAYER:
            g = GaugeMetricFamily(name, doc, labels=keys)
            for row in snap.rows:
                value = getattr(row, attr)
                if value is not None:
                    g.add_metric([*vals, row.layer], value)
            yield g
        nf = GaugeMetricFamily("slatmon_nonfinite_elements", "Per-layer NaN+Inf element count.",
                               labels=[*keys, "tensor"])
        first = snap.param_nonfinite_first
        for row in snap.rows:
            for tensor, attr in _NONFINITE:
                value = getattr(row, attr)
                if tensor == "param" and first is not None:
                    value = first.get(row.layer, value)
                if value is not None:
                    nf.add_metric([*vals, row.layer, tensor], value)
        yield nf
        info = GaugeMetricFamily("slatmon_layer_info", "Layer dtypes (value is always 1).",
                                 labels=[*keys, "dtype", "state_dtype"])
        for layer, li in snap.layer_info.items():
            info.add_metric([*vals, layer, li.dtype, li.state_dtype or "none"], 1.0)
        yield info

    def _optimizer(self, snap: Snapshot, base: dict[str, str]) -> Iterator[Metric]:
        keys, vals = [*base, "group"], list(base.values())
        for name, values, doc in (("slatmon_optimizer_lr", snap.lr, "Learning rate per param group."),
                                  ("slatmon_optimizer_eps", snap.eps, "Optimizer eps per param group.")):
            g = GaugeMetricFamily(name, doc, labels=keys)
            for i, v in enumerate(values):
                if v is not None:
                    g.add_metric([*vals, str(i)], v)
            yield g

    def _run_info(self, base: dict[str, str]) -> Metric:
        info = self._info()
        g = GaugeMetricFamily("slatmon_run_info", "Training set-up (value is always 1).",
                              labels=[*base, "scaler", "optimizer", "master_weights", "fused", "autocast",
                                      "torch_version", "local_rank", "world_size", "run_id", "restart_count"])
        fused = bool(info.groups) and all(g.fused for g in info.groups)
        g.add_metric([*base.values(), info.scaler, info.optimizer, str(info.master_weights).lower(),
                      str(fused).lower(), info.autocast or "none", info.torch_version, str(info.local_rank),
                      str(info.world_size), info.run_id, str(info.restart_count)], 1.0)
        return g

    def _finding_families(self, base: dict[str, str]) -> Iterator[Metric]:
        labels = [*base, "code", "severity"]
        g = GaugeMetricFamily("slatmon_finding", "Active diagnosis findings (value is always 1).", labels=labels)
        first = GaugeMetricFamily("slatmon_finding_first_step", "Step at which each active finding began "
                                  "(0: predicted before the first step).", labels=labels)
        seen = set()
        for f in self._findings():
            if (f.code, f.severity) not in seen:
                seen.add((f.code, f.severity))
                g.add_metric([*base.values(), f.code, f.severity], 1.0)
                if f.first_step is not None:
                    first.add_metric([*base.values(), f.code, f.severity], float(f.first_step))
        yield g
        yield first
