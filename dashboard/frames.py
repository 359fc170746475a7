"""Tables the page charts and lists, built from a History (pandas; no Streamlit, no altair).

Non-finite values are kept apart from the plotted value: `value` is NaN where the observation was
NaN/Inf and `nonfinite` is True there, so a chart can draw the finite line and mark the bad steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from monitor.findings import Finding
from monitor.history import Event, History

from .summary import state_text

__all__ = ["LAYER_FIELDS", "STEP_FIELDS", "event_frame", "highlights", "layer_frame", "layer_table", "nonfinite_text",
           "step_frame", "worst_layers"]

STEP_FIELDS = {"loss": "loss", "grad_norm_total": "global grad norm", "loss_scale": "loss scale"}
LAYER_FIELDS = {"grad_norm": "grad norm", "param_nonfinite": "non-finite params", "grad_nonfinite": "non-finite grads",
                "activation_nonfinite": "non-finite activations", "update_ratio": "update / param ratio",
                "param_norm": "param norm", "zero_grad_ratio": "zero-grad share",
                "state_zero_ratio": "Adam exp_avg_sq zero share",
                "update_unchanged_ratio": "16-bit weights unchanged share", "adam_rms_ratio": "Adam RMS(g^2/v_hat)"}
_BAD = ("grad_nonfinite", "param_nonfinite", "activation_nonfinite")


def _split(x: float | None) -> tuple[float, bool]:
    """(plotted value, non-finite?) of one observation; None -> (NaN, False)."""
    if x is None:
        return math.nan, False
    return (x, False) if math.isfinite(x) else (math.nan, True)


def nonfinite_text(x: float | None) -> str:
    """"NaN", "+Inf" or "-Inf" for a non-finite observation, "" otherwise (what a chart marker says)."""
    if x is None or math.isfinite(x):
        return ""
    return "NaN" if math.isnan(x) else ("+Inf" if x > 0 else "-Inf")


def step_frame(history: History) -> pd.DataFrame:
    """One row per observed step: step, skipped, skipped_total, and for each STEP_FIELDS key its value,
    `<key>_nonfinite` and `<key>_text` (nonfinite_text())."""
    rows = []
    for s in history.steps:
        row = {"step": s.step, "skipped": s.skipped, "skipped_total": s.skipped_total}
        for key in STEP_FIELDS:
            x = getattr(s, key)
            row[key], row[f"{key}_nonfinite"] = _split(x)
            row[f"{key}_text"] = nonfinite_text(x)
        rows.append(row)
    columns = ["step", "skipped", "skipped_total"] + [c for k in STEP_FIELDS
                                                      for c in (k, f"{k}_nonfinite", f"{k}_text")]
    return pd.DataFrame(rows, columns=columns)


@dataclass
class _Score:
    first_bad: float = math.inf
    bad_total: int = 0
    max_grad: float = 0.0


def worst_layers(history: History, findings: Iterable[Finding] = (), n: int = 5) -> list[str]:
    """Up to `n` layers to chart: those the findings name (in their order), then the layers that went
    non-finite (earliest first, then most elements), then the largest finite gradient norms."""
    scores: dict[str, _Score] = {}
    for r in history.layers:
        sc = scores.setdefault(r.layer, _Score())
        bad = sum(int(getattr(r, f) or 0) for f in _BAD)
        if bad:
            sc.first_bad, sc.bad_total = min(sc.first_bad, r.step), sc.bad_total + bad
        if r.grad_norm is not None and math.isfinite(r.grad_norm):
            sc.max_grad = max(sc.max_grad, r.grad_norm)
    named = [layer for f in findings for layer in f.layers if layer in scores]
    rest = sorted(scores, key=lambda k: (scores[k].first_bad, -scores[k].bad_total, -scores[k].max_grad, k))
    return list(dict.fromkeys(named + rest))[:n]


def layer_frame(history: History, layers: Iterable[str], field: str) -> pd.DataFrame:
    """Long table step, layer, value, nonfinite of LayerObs `field` for `layers` (rows without it left out)."""
    wanted = set(layers)
    rows = []
    for r in history.layers:
        x = getattr(r, field)
        if r.layer in wanted and x is not None:
            value, bad = _split(float(x))
            rows.append({"step": r.step, "layer": r.layer, "value": value, "nonfinite": bad})
    return pd.DataFrame(rows, columns=["step", "layer", "value", "nonfinite"])


def layer_table(history: History) -> pd.DataFrame:
    """One row per layer of the run's set-up: layer, dtype, optimizer state (its dtype, or why there is
    none), elements, trainable."""
    stepped = any(not s.skipped for s in history.steps)  # Adam makes its state at the first update
    rows = [{"layer": name, "dtype": info.dtype, "optimizer state": state_text(history.run, info, stepped),
             "elements": info.numel, "trainable": info.trainable} for name, info in history.run.layers.items()]
    return pd.DataFrame(rows, columns=["layer", "dtype", "optimizer state", "elements", "trainable"])


def _detail(event: Event) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.detail.items())


def event_frame(history: History, limit: int = 200) -> pd.DataFrame:
    """The first `limit` events: step, kind, tensor, layer, detail (one readable string)."""
    rows = [{"step": e.step, "kind": e.kind, "tensor": e.tensor or "", "layer": e.layer or "", "detail": _detail(e)}
            for e in history.events[:limit]]
    return pd.DataFrame(rows, columns=["step", "kind", "tensor", "layer", "detail"])


def highlights(history: History) -> list[str]:
    """Sentences for the events that matter most: the first non-finite value of each tensor kind and the
    first localised module per direction."""
    out, seen = [], set()
    for e in history.events:
        key = (e.kind, e.tensor if e.kind == "nonfinite" else e.detail.get("direction"))
        if e.kind not in ("nonfinite", "localized") or key in seen:
            continue
        seen.add(key)
        where = f" in {e.layer}" if e.layer else ""
        if e.kind == "nonfinite":
            out.append(f"First non-finite {e.tensor or 'value'} at step {e.step}{where}"
                       + (f" ({_detail(e)})" if e.detail else ""))
        else:
            direction = e.detail.get("direction", "?")
            what = "output" if direction == "forward" else "gradient"
            out.append(f"Localised ({direction}): first module with a non-finite {what} at step {e.step}{where}"
                       + (f" ({_detail(e)})" if e.detail else ""))
    return out
