"""Prometheus export: one custom collector over the latest Snapshot, built at scrape time.

`collect()` runs in the HTTP server's thread, reads the snapshot reference once and builds fresh
metric families; series of layers that vanished simply aren't emitted. The training thread never
touches prometheus_client objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..findings import Finding
from ..history import RunInfo
from ..snapshot import Counters, Snapshot

__all__ = ["SnapshotCollector"]

_PER_LAYER = (
    ("slatmon_grad_norm", "grad_norm", "Per-layer L2 norm of the unscaled gradients."),
    ("slatmon_param_norm", "param_norm", "Per-layer L2 norm of the parameters after the update."),
    ("slatmon_update_ratio", "update_ratio", "Per-layer norm(update) / norm(parameters)."),
    ("slatmon_zero_grad_ratio", "zero_grad_ratio", "Per-layer share of exactly-zero gradient elements."),
    ("slatmon_adam_state_zero_ratio", "state_zero_ratio", "Per-layer share of Adam exp_avg_sq elements equal to 0."),
)
_NONFINITE = (("grad", "grad_nonfinite"), ("param", "param_nonfinite"), ("activation", "activation_nonfinite"))


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


class SnapshotCollector(Collector):
    """Exports `snapshot()`, `counters()` and `findings()` (callables, read at scrape time)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Callable[[], Counters],
        findings: Callable[[], list[Finding]],
        info: Callable[[], RunInfo],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._snapshot, self._counters, self._findings, self._info = snapshot, counters, findings, info
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # no describe-time evaluation: families depend on the live snapshot

    def collect(self) -> Iterator[Metric]:
        snap, counters = self._snapshot(), self._counters()
        base = {"run": snap.run, "rank": str(snap.rank)}
        yield from self._globals(snap, counters, base)
        yield from self._layers(snap, base)
        yield from self._optimizer(snap, base)
        yield self._finding_family(base)
        yield self._run_info(base)

    def _globals(self, snap: Snapshot, c: Counters, base: dict[str, str]) -> Iterator[Metric]:
        keys, vals = list(base), list(base.values())

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=keys)
            g.add_metric(vals, _num(value))
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=keys)
            m.add_metric(vals, value)
            return m

        last = snap.last
        yield gauge("slatmon_step", "Last optimizer step seen (skipped steps included).", c.step)
        yield gauge("slatmon_loss", "Last loss observed on a sampled step.", snap.loss)
        yield gauge("slatmon_loss_scale", "GradScaler scale or the custom loss scale.", c.loss_scale)
        yield gauge("slatmon_grad_norm_global", "Global L2 norm of the unscaled gradients.",
                    last.grad_norm_total if last else None)
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
                                                "torch_version"])
        fused = bool(info.groups) and all(g.fused for g in info.groups)
        g.add_metric([*base.values(), info.scaler, info.optimizer, str(info.master_weights).lower(),
                      str(fused).lower(), info.autocast or "none", info.torch_version], 1.0)
        return g

    def _finding_family(self, base: dict[str, str]) -> Metric:
        g = GaugeMetricFamily("slatmon_finding", "Active diagnosis findings (value is always 1).",
                              labels=[*base, "code", "severity"])
        seen = set()
        for f in self._findings():
            if (f.code, f.severity) not in seen:
                seen.add((f.code, f.severity))
                g.add_metric([*base.values(), f.code, f.severity], 1.0)
        return g
