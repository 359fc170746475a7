"""Prometheus export: one custom collector over the latest Snapshot, built at scrape time.

`families()` runs in the HTTP server's thread, reads the snapshot reference once and builds fresh
families (monitor/export/text.py renders them for the endpoint; `collect()` hands them to a
prometheus_client registry); series of layers that vanished simply aren't emitted. The per-layer
families are built once per snapshot (a sampled step) and reused by every scrape until the next.
The training thread never touches any of this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..findings import Finding
from ..history import Event, LayerInfo, RunInfo
from ..snapshot import Counters, Snapshot
from .grouping import group_name, group_rows, should_group
from .text import Family

__all__ = ["SnapshotCollector"]

_PER_LAYER = (
    ("slatmon_grad_norm", "grad_norm", "Per-layer L2 norm of the unscaled gradients."),
    ("slatmon_param_norm", "param_norm", "Per-layer L2 norm of the parameters after the update."),
    ("slatmon_update_ratio", "update_ratio", "Per-layer norm(update) / norm(parameters)."),
    ("slatmon_zero_grad_ratio", "zero_grad_ratio", "Per-layer share of exactly-zero gradient elements."),
    ("slatmon_adam_state_zero_ratio", "state_zero_ratio", "Per-layer share of Adam exp_avg_sq elements equal to 0."),
    ("slatmon_update_unchanged_ratio", "update_unchanged_ratio", "Per-layer share of fp16/bf16 weight elements "
     "the last sampled update left exactly unchanged (updates rounding away)."),
    ("slatmon_adam_rms_ratio", "adam_rms_ratio", "Per-layer RMS of g^2 / v_hat (Adam second-moment lag; ~1 "
     "healthy, far above 1 ahead of loss spikes)."),
)
_NONFINITE = (("grad", "grad_nonfinite"), ("param", "param_nonfinite"), ("activation", "activation_nonfinite"))


_BASE = ("run", "rank")


class SnapshotCollector(Collector):
    """Exports `snapshot()`, `counters()` and `findings()` (callables, read at scrape time). `on_error`:
    where a family that fails to build is reported (it is then left out); None: the error propagates."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Callable[[], Counters],
        findings: Callable[[], list[Finding]],
        info: Callable[[], RunInfo],
        registry: CollectorRegistry | None = None,
        events: Callable[[], list[Event]] = list,
        export_layers: str = "auto",
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._snapshot, self._counters, self._findings, self._info = snapshot, counters, findings, info
        self._events, self._export_layers, self._on_error = events, export_layers, on_error
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
        """Every family of one scrape, computed here (one read of the snapshot reference)."""
        snap = self._snapshot()
        return self.assemble(snap, self.layer_families(snap), self._findings())

    def layer_families(self, snap: Snapshot) -> list[Family]:
        """The per-layer families of `snap` (the costly part at 10,000 layers), built once per snapshot."""
        cached, layers = self._layer_cache
        if cached is not snap:
            base = (snap.run, str(snap.rank))
            shown, folded = self._grouped(snap)
            layers = [*self._layers(shown, base), self._grouped_family(base, folded)]
            self._layer_cache = (snap, layers)  # one reference assignment: safe with concurrent scrapes
        return layers

    def assemble(self, snap: Snapshot, layers: list[Family], findings: list[Finding]) -> list[Family]:
        """Every family of one scrape from its parts (export/prepare.py prepares `layers` and `findings`
        off the scrape path). With `on_error`, a part that raises is left out and reported, and the rest
        is still served; the counters are read last, so they include an error of this very scrape."""
        base = (snap.run, str(snap.rank))
        parts: list[Callable[[], Iterable[Family]]] = [
            lambda: self._local_first(base), lambda: layers, lambda: self._optimizer(snap, base),
            lambda: self._finding_families(base, findings), lambda: [self._run_info(base)]]
        out = [f for part in parts for f in self._guarded(part)]
        return [*self._guarded(lambda: self._globals(snap, self._counters(), base)), *out]

    def _guarded(self, part: Callable[[], Iterable[Family]]) -> list[Family]:
        if self._on_error is None:
            return list(part())
        try:
            return list(part())
        except Exception as exc:  # our bug must not cost the scrape: the other families are still served
            self._on_error(exc)
            return []

    def _globals(self, snap: Snapshot, c: Counters, base: tuple[str, str]) -> Iterator[Family]:
        def one(kind: str, name: str, doc: str, value: float | None) -> Family:
            """No sample while the value is unknown: a NaN sample always means a NaN was observed."""
            return Family(name, kind, doc, _BASE, [] if value is None else [(base, float(value))])

        last = snap.last
        yield one("gauge", "slatmon_step", "Last optimizer step seen (skipped steps included).", c.step)
        yield one("gauge", "slatmon_loss", "Last loss observed (on a sampled or a skipped step).", snap.loss)
        yield one("gauge", "slatmon_output_nonfinite_elements", "NaN+Inf elements of the model's outputs in the "
                  "last step seen (sampled or skipped), when they were checked.", snap.output_nonfinite)
        yield one("gauge", "slatmon_sampled_step", "The step the per-layer series describe (the last sampled step).",
                  last.step if last else None)
        yield one("gauge", "slatmon_loss_scale", "GradScaler scale or the custom loss scale.", c.loss_scale)
        yield one("gauge", "slatmon_grad_norm_global", "Global L2 norm of the unscaled gradients (before clipping).",
                  last.grad_norm_total if last else None)
        yield one("gauge", "slatmon_grad_norm_applied", "Global L2 norm of the gradients optimizer.step() received "
                  "(unscaled, after clipping).", last.grad_norm_applied if last else None)
        yield one("gauge", "slatmon_last_step_timestamp_seconds", "Unix time of the last optimizer step seen.",
                  c.time or None)
        yield one("counter", "slatmon_skipped_steps", "Optimizer steps not applied: scaler skips, hand-made "
                  "scale drops, step_skipped(), the guard.", c.skipped_steps)
        yield one("counter", "slatmon_monitor_seconds", "Time the monitor spent in the training thread.",
                  c.monitor_seconds)
        yield one("counter", "slatmon_monitor_errors", "Errors caught inside the monitor (hooks, diagnosis, scrapes).",
                  c.errors + c.background_errors)
        yield one("counter", "slatmon_record_errors", "Run-record observations that could not be written (and "
                  "record files found removed or replaced mid-run).", c.record_errors)
        steps = Family("slatmon_nonfinite_steps", "counter", "Sampled steps with any non-finite value.",
                       (*_BASE, "tensor"))
        for tensor, n in c.nonfinite_steps.items():
            steps.add((*base, tensor), n)
        yield steps

    def _grouped(self, snap: Snapshot) -> tuple[Snapshot, int]:
        """The snapshot as exported, and how many modules owning parameters are not exported under their own
        name: those measured inside a layer of several (max_layers, group_depth: monitor/layers.py) and
        those folded into a block group for large jobs (export/grouping.py)."""
        measured = sum(li.modules for li in snap.layer_info.values() if li.modules > 1)  # max_layers / group_depth
        if not should_group(self._export_layers, self._info().world_size):
            return snap, measured
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
        single = {n for n, li in snap.layer_info.items() if li.modules == 1}  # the others are counted above
        folded = sum(1 for n, shown in g.groups.items() if shown != n and n in single)
        return dataclasses.replace(snap, rows=g.rows, param_nonfinite_first=first, layer_info=info), measured + folded

    def _local_first(self, base: tuple[str, str]) -> tuple[Family, Family]:
        """What a cross-rank comparison needs from each rank without a collective (besides
        slatmon_sampled_step, so ranks are compared on the same step): the first step of a rank-local
        non-finite value (loss, activation or model input); and that of a non-finite model input
        alone (the data, not the model: the diagnosis read from Prometheus needs it)."""
        local = Family("slatmon_nonfinite_local_first_step", "gauge",
                       "First step whose loss, activations or model input were non-finite on this rank "
                       "(absent: none so far).",
                       _BASE)
        events = self._events()
        steps = [e.step for e in events if e.kind == "localized" or (
            e.kind == "nonfinite" and e.tensor in ("loss", "activation", "input"))]
        if steps:
            local.add(base, float(min(steps)))
        data = Family("slatmon_nonfinite_input_first_step", "gauge",
                      "First step whose model input held NaN/Inf on this rank (absent: none so far).", _BASE)
        inputs = [e.step for e in events if e.kind == "nonfinite" and e.tensor == "input"]
        if inputs:
            data.add(base, float(min(inputs)))
        return local, data

    @staticmethod
    def _grouped_family(base: tuple[str, str], folded: int) -> Family:
        return Family("slatmon_layers_grouped", "gauge",
                      "Modules with parameters exported inside a group instead of alone: max_layers ranges "
                      "(layer=\"layers.[0-9]\") and block groups of large jobs (layer=\"<block>.*\").", _BASE,
                      [(base, float(folded))])

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
                   (*_BASE, "scaler", "optimizer", "master_weights", "fused", "autocast", "torch_version",
                    "local_rank", "world_size", "run_id", "restart_count"))
        fused = bool(info.groups) and all(g.fused for g in info.groups)
        g.add((*base, info.scaler, info.optimizer, str(info.master_weights).lower(), str(fused).lower(),
               info.autocast or "none", info.torch_version, str(info.local_rank), str(info.world_size),
               info.run_id, str(info.restart_count)), 1.0)
        return g

    def _finding_families(self, base: tuple[str, str], findings: list[Finding]) -> tuple[Family, Family]:
        keys = (*_BASE, "code", "severity")
        g = Family("slatmon_finding", "gauge", "Active diagnosis findings (value is always 1).", keys)
        first = Family("slatmon_finding_first_step", "gauge", "Step at which each active finding began "
                       "(0: predicted before the first step).", keys)
        seen = set()
        for f in findings:
            if (f.code, f.severity) not in seen:
                seen.add((f.code, f.severity))
                g.add((*base, f.code, f.severity), 1.0)
                if f.first_step is not None:
                    first.add((*base, f.code, f.severity), float(f.first_step))
        return g, first
