"""Prometheus export: one custom collector over the latest Snapshot, built at scrape time.

`families()` runs in the HTTP server's thread, reads the snapshot reference once and builds fresh
families (monitor/export/text.py renders them for the endpoint; `collect()` hands them to a
prometheus_client registry); series of layers that vanished simply aren't emitted. The per-layer
families are built once per snapshot (a sampled step) and reused by every scrape until the next.
The training thread never touches any of this.
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
from .text import Family

__all__ = ["SnapshotCollector"]

_PER_LAYER = (
    ("slatmon_grad_norm", "grad_norm", "Per-layer L2 norm of the unscaled gradients."),
    ("slatmon_param_norm", "param_norm", "Per-layer L2 norm of the parameters after the update."),
    ("slatmon_update_ratio", "update_ratio", "Per-layer norm(update) / norm(parameters)."),
    ("slatmon_zero_grad_ratio", "zero_grad_ratio", "Per-layer share of exactly-zero gradient elements."),
    ("slatmon_adam_state_zero_ratio", "state_zero_ratio", "Per-layer share of Adam exp_avg_sq elements equal to 0."),
)
_NONFINITE = (("grad", "grad_nonfinite"), ("param", "param_nonfinite"), ("activation", "activation_nonfinite"))


_BASE = ("run", "rank")


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
        self._layer_cache: tuple[Snapshot | None, list[Family]] = (None, [])
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # no describe-time evaluation: families depend on the live snapshot

    def collect(self) -> Iterator[Metric]:
        for f in self.families():
            cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            m = cls(f.name, f.doc, labels=list(f.keys))
            for values, v in f.samples:
                m.add_metric(list(values), v)
            yield m

    def families(self) -> list[Family]:
        """Every family of one scrape (one read of the snapshot reference)."""
        snap, counters = self._snapshot(), self._counters()
        base = (snap.run, str(snap.rank))
        cached, layers = self._layer_cache
        if cached is not snap:
            layers = self._layers(snap, base)
            self._layer_cache = (snap, layers)  # one reference assignment: safe with concurrent scrapes
        return [*self._globals(snap, counters, base), *layers, *self._optimizer(snap, base),
                self._finding_family(base), self._run_info(base)]

    def _globals(self, snap: Snapshot, c: Counters, base: tuple[str, str]) -> Iterator[Family]:
        def one(kind: str, name: str, doc: str, value: float) -> Family:
            return Family(name, kind, doc, _BASE, [(base, value)])

        last = snap.last
        yield one("gauge", "slatmon_step", "Last optimizer step seen (skipped steps included).", c.step)
        yield one("gauge", "slatmon_loss", "Last loss observed on a sampled step.", _num(snap.loss))
        yield one("gauge", "slatmon_loss_scale", "GradScaler scale or the custom loss scale.", _num(c.loss_scale))
        yield one("gauge", "slatmon_grad_norm_global", "Global L2 norm of the unscaled gradients.",
                  _num(last.grad_norm_total if last else None))
        yield one("gauge", "slatmon_last_step_timestamp_seconds", "Unix time of the last optimizer step seen.",
                  _num(c.time or None))
        yield one("counter", "slatmon_skipped_steps", "Optimizer steps skipped by the loss scaler.", c.skipped_steps)
        yield one("counter", "slatmon_monitor_seconds", "Time the monitor spent in the training thread.",
                  c.monitor_seconds)
        yield one("counter", "slatmon_monitor_errors", "Errors caught inside the monitor.", c.errors)
        steps = Family("slatmon_nonfinite_steps", "counter", "Sampled steps with any non-finite value.",
                       (*_BASE, "tensor"))
        for tensor, n in c.nonfinite_steps.items():
            steps.add((*base, tensor), n)
        yield steps

    def _layers(self, snap: Snapshot, base: tuple[str, str]) -> list[Family]:
        keys = (*_BASE, "layer")
        out = []
        for name, attr, doc in _PER_LAYER:
            g = Family(name, "gauge", doc, keys)
            for row in snap.rows:
                value = getattr(row, attr)
                if value is not None:
                    g.add((*base, row.layer), float(value))
            out.append(g)
        nf = Family("slatmon_nonfinite_elements", "gauge", "Per-layer NaN+Inf element count.", (*keys, "tensor"))
        first = snap.param_nonfinite_first
        for row in snap.rows:
            for tensor, attr in _NONFINITE:
                value = getattr(row, attr)
                if tensor == "param" and first is not None:
                    value = first.get(row.layer, value)
                if value is not None:
                    nf.add((*base, row.layer, tensor), float(value))
        out.append(nf)
        info = Family("slatmon_layer_info", "gauge", "Layer dtypes (value is always 1).",
                      (*keys, "dtype", "state_dtype"))
        for layer, li in snap.layer_info.items():
            info.add((*base, layer, li.dtype, li.state_dtype or "none"), 1.0)
        out.append(info)
        return out

    def _optimizer(self, snap: Snapshot, base: tuple[str, str]) -> Iterator[Family]:
        for name, values, doc in (("slatmon_optimizer_lr", snap.lr, "Learning rate per param group."),
                                  ("slatmon_optimizer_eps", snap.eps, "Optimizer eps per param group.")):
            g = Family(name, "gauge", doc, (*_BASE, "group"))
            for i, v in enumerate(values):
                if v is not None:
                    g.add((*base, str(i)), float(v))
            yield g

    def _run_info(self, base: tuple[str, str]) -> Family:
        info = self._info()
        g = Family("slatmon_run_info", "gauge", "Training set-up (value is always 1).",
                   (*_BASE, "scaler", "optimizer", "master_weights", "fused", "autocast", "torch_version"))
        fused = bool(info.groups) and all(g.fused for g in info.groups)
        g.add((*base, info.scaler, info.optimizer, str(info.master_weights).lower(), str(fused).lower(),
               info.autocast or "none", info.torch_version), 1.0)
        return g

    def _finding_family(self, base: tuple[str, str]) -> Family:
        g = Family("slatmon_finding", "gauge", "Active diagnosis findings (value is always 1).",
                   (*_BASE, "code", "severity"))
        seen = set()
        for f in self._findings():
            if (f.code, f.severity) not in seen:
                seen.add((f.code, f.severity))
                g.add((*base, f.code, f.severity), 1.0)
        return g
