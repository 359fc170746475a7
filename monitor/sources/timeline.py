"""Raw Prometheus samples of one run/rank -> History. Pure (no HTTP), so it is testable on its own.

Each scrape gives every slatmon_* series the same timestamp. `slatmon_sampled_step` says which step
the per-layer series describe: a scrape that shows a new one becomes a sampled observation at that
step (a scrape showing the same one again adds nothing). `slatmon_step` is the last step seen:
when every step since the previous scrape was skipped (`slatmon_skipped_steps_total` grew by the
gap) it becomes a skipped observation, with the loss then shown. Scrapes are usually sparser than
steps, so the History is sparse: `skipped_total` carries skips that happened between scrapes.

A gauge without a sample was not observed (None); a NaN sample is a NaN that was observed. The
watcher's own findings (`slatmon_finding`, `slatmon_finding_first_step`) come along as reported
findings, replaced by the rules' own finding of the same code.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..findings import Finding
from ..history import Event, GroupInfo, History, LayerInfo, LayerObs, RunInfo, StepObs
from ..localize import OUTPUT

__all__ = ["Series", "build_history"]

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]  # (labels, [(timestamp, value)])

_LAYER_GAUGES = {"slatmon_grad_norm": "grad_norm", "slatmon_param_norm": "param_norm",
                 "slatmon_update_ratio": "update_ratio", "slatmon_zero_grad_ratio": "zero_grad_ratio",
                 "slatmon_adam_state_zero_ratio": "state_zero_ratio",
                 "slatmon_update_unchanged_ratio": "update_unchanged_ratio", "slatmon_adam_rms_ratio": "adam_rms_ratio"}
_NONFINITE = {"grad": "grad_nonfinite", "param": "param_nonfinite", "activation": "activation_nonfinite"}


def _by_time(series: Series) -> dict[float, list[tuple[dict[str, str], float]]]:
    scrapes: dict[float, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for labels, values in series:
        for t, v in values:
            scrapes[t].append((labels, v))
    return dict(sorted(scrapes.items()))


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def _int(v: float | None) -> int:
    return int(v) if v is not None and math.isfinite(v) else 0


def _run_info(series: Series, run: str, rank: int) -> RunInfo:
    info: dict[str, str] = {}
    layers: dict[str, LayerInfo] = {}
    lr: dict[int, float] = {}
    eps: dict[int, float] = {}
    # An info series changes labels during the run (state_dtype "none" until the optimizer made its
    # state at step 1): of several, the one scraped last holds the truth.
    seen: dict[tuple[str, str], float] = {}
    layer_labels: dict[str, dict[str, str]] = {}
    for labels, values in series:
        name = labels.get("__name__")
        last = values[-1][1] if values else math.nan
        when = values[-1][0] if values else -math.inf
        key = (name or "", labels.get("layer", ""))
        if name in ("slatmon_run_info", "slatmon_layer_info") and when < seen.get(key, -math.inf):
            continue
        if name == "slatmon_run_info":
            info, seen[key] = labels, when
        elif name == "slatmon_layer_info" and labels.get("layer"):
            layer_labels[labels["layer"]], seen[key] = labels, when
        elif name in ("slatmon_optimizer_lr", "slatmon_optimizer_eps") and labels.get("group", "").isdigit():
            (lr if name.endswith("lr") else eps)[int(labels["group"])] = last
    master = info.get("master_weights") == "true"
    for layer, labels in layer_labels.items():
        state = labels.get("state_dtype")
        layers[layer] = LayerInfo(dtype=labels.get("dtype", ""), state_dtype=None if state in (None, "", "none")
                                  else state, in_optimizer=not master)
    fused = info.get("fused") == "true"
    groups = tuple(GroupInfo(lr=lr.get(i, math.nan), eps=_finite_or_none(eps.get(i)), fused=fused)
                   for i in sorted(set(lr) | set(eps)))
    return RunInfo(run=run, rank=rank, torch_version=info.get("torch_version", ""),
                   optimizer=info.get("optimizer", ""), groups=groups, scaler=info.get("scaler", "none"),
                   master_weights=master, autocast=None if info.get("autocast") in (None, "none") else
                   info.get("autocast"), layers=layers)


def _scrape_values(samples: list[tuple[dict[str, str], float]]) -> tuple[dict, dict, dict]:
    """(global values by metric, per-layer fields by layer, group values by (metric, group))."""
    glob: dict[str, float] = {}
    layers: dict[str, dict[str, float]] = defaultdict(dict)
    groups: dict[tuple[str, int], float] = {}
    for labels, v in samples:
        name, layer = labels.get("__name__", ""), labels.get("layer")
        if name in _LAYER_GAUGES and layer:
            layers[layer][_LAYER_GAUGES[name]] = v
        elif name == "slatmon_nonfinite_elements" and layer and labels.get("tensor") in _NONFINITE:
            layers[layer][_NONFINITE[labels["tensor"]]] = v
        elif name in ("slatmon_optimizer_lr", "slatmon_optimizer_eps") and labels.get("group", "").isdigit():
            groups[(name, int(labels["group"]))] = v
        elif name == "slatmon_nonfinite_steps_total":
            glob[f"nonfinite_steps:{labels.get('tensor')}"] = v
        elif name == "slatmon_finding":
            glob[f"finding:{labels.get('code')}:{labels.get('severity')}"] = v
        elif name == "slatmon_finding_first_step":
            glob[f"first:{labels.get('code')}:{labels.get('severity')}"] = v
        elif name:
            glob[name] = v
    return glob, layers, groups


def _layer_rows(step: int, layers: dict[str, dict[str, float]]) -> list[LayerObs]:
    rows = []
    for layer, fields in layers.items():
        kw = {k: ((int(v) if math.isfinite(v) and v >= 0 else None) if k.endswith("nonfinite") else v)
              for k, v in fields.items()}
        rows.append(LayerObs(step=step, layer=layer, **kw))
    return rows


def _finding(code: str, severity: str, step: int, first: float | None) -> Finding:
    first_step = int(first) if first is not None and math.isfinite(first) and first >= 0 else step
    return Finding(code, severity if severity in ("critical", "warning", "info") else "info",
                   f"{code} (reported by the watcher)",
                   (f"reported by the watched process (slatmon_finding), from step {first_step}",), first_step)


def _step_obs(step: int, glob: dict[str, float], layer_rows: list[LayerObs], groups: dict, skipped_total: int,
              loss: float | None) -> StepObs:
    return StepObs(
        step=step, time=glob.get("slatmon_last_step_timestamp_seconds", 0.0) or 0.0, sampled=True,
        skipped=False, skipped_total=skipped_total, loss=loss,
        loss_scale=_finite_or_none(glob.get("slatmon_loss_scale")),
        grad_norm_total=glob.get("slatmon_grad_norm_global"), grad_norm_applied=glob.get("slatmon_grad_norm_applied"),
        grad_nonfinite=int(sum(r.grad_nonfinite or 0 for r in layer_rows)),
        param_nonfinite=int(sum(r.param_nonfinite or 0 for r in layer_rows)),
        lr=tuple(v for (m, _), v in sorted(groups.items()) if m.endswith("lr")))


def build_history(series: Series, run: str, rank: int) -> History:
    """A History from the raw samples of one run and rank (see the module docstring)."""
    info = _run_info(series, run, rank)
    steps: list[StepObs] = []
    rows: list[LayerObs] = []
    events: list[Event] = []
    findings: dict[str, Finding] = {}
    prev_step, prev_sampled, prev_skipped, prev_nf = 0, 0, 0, {}
    for _, samples in _by_time(series).items():
        glob, layers, groups = _scrape_values(samples)
        step = glob.get("slatmon_step")
        if step is None or not math.isfinite(step) or step <= prev_step:
            continue
        step = int(step)
        skipped_total = _int(glob.get("slatmon_skipped_steps_total"))
        loss = glob.get("slatmon_loss")  # absent: not observed; NaN: a NaN loss
        all_skipped = skipped_total - prev_skipped >= step - prev_step
        sampled = glob.get("slatmon_sampled_step", None if all_skipped else step)  # older exporters had none
        if sampled is not None and math.isfinite(sampled) and prev_sampled < int(sampled) <= step:
            sampled = int(sampled)
            layer_rows = _layer_rows(sampled, layers)
            rows += layer_rows
            steps.append(_step_obs(sampled, glob, layer_rows, groups, skipped_total - (step > sampled),
                                   loss if sampled == step else None))
            prev_sampled = sampled
        last = steps[-1].step if steps else prev_step
        if step > last and skipped_total - prev_skipped >= step - max(prev_step, last):
            out = glob.get("slatmon_output_nonfinite_elements")
            if out is not None and math.isfinite(out):
                rows.append(LayerObs(step=step, layer=OUTPUT, activation_nonfinite=int(out)))
            steps.append(StepObs(step=step, time=glob.get("slatmon_last_step_timestamp_seconds", 0.0) or 0.0,
                                 sampled=False, skipped=True, skipped_total=skipped_total, loss=loss,
                                 loss_scale=_finite_or_none(glob.get("slatmon_loss_scale"))))
        for key, value in glob.items():
            if key.startswith("nonfinite_steps:") and value > prev_nf.get(key, 0):
                if key not in prev_nf or prev_nf[key] == 0:
                    events.append(Event(step, "nonfinite", None, key.split(":", 1)[1], {"source": "prometheus"}))
                prev_nf[key] = value
        data = glob.get("slatmon_nonfinite_input_first_step")  # the exporter's exact step of bad data
        if data is not None and math.isfinite(data) and not any(e.tensor == "input" for e in events):
            events.append(Event(int(data), "nonfinite", None, "input", {"source": "prometheus"}))
        reported = {key: _finding(*key.split(":", 2)[1:], step, glob.get("first:" + key.split(":", 1)[1]))
                    for key in glob if key.startswith("finding:")}
        if reported:
            findings = reported  # the watcher's latest diagnosis replaces what it said before
        prev_step, prev_skipped = step, skipped_total
    return History(run=info, steps=steps, layers=rows, events=events, preflight=list(findings.values()))
