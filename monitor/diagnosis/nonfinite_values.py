"""nonfinite_values: the invariant behind every other rule - never "healthy" while anything the
monitor saw was non-finite.

Runs after the specific rules (see engine.run_rules), over what they produced. It collects every
non-finite observation in the History, whatever the dtype: a NaN/Inf loss, gradient (per layer, the
global norm before clipping, or the norm optimizer.step() received), parameter, model output or
activation, and non-finite events. Then:
- some of them reached an applied step (not skipped) and no critical finding that explains non-finite
  values exists -> critical;
- they all sit on skipped steps (a scaler or the loop itself kept them out of the weights) and no
  finding that explains non-finite values exists at all -> warning.
"Explains" is the causal graph of findings.EXPLAINS: a finding about the record, the diagnosis itself,
a trend (loss spike, moment lag) or a pre-flight lint says nothing about where a NaN came from.
Evidence: per kind of tensor, the first step and the layers (first in model order), and whether
clipping spread a NaN into layers whose own gradients were finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..findings import EXPLAINS, Finding
from ..history import History
from .observe import OUTPUT_ROWS, count, fmt_layers, nonfinite, sorted_steps

CODE = "nonfinite_values"
_LAYER_FIELDS = (("grad", "grad_nonfinite"), ("param", "param_nonfinite"), ("activation", "activation_nonfinite"))


@dataclass
class _Seen:
    """First step and layers of each kind of non-finite value."""

    first: dict[str, int] = field(default_factory=dict)
    layers: dict[str, list[str]] = field(default_factory=dict)
    applied: bool = False  # some of it was on a step whose update ran

    def add(self, kind: str, step: int, layer: str | None, applied: bool) -> None:
        if kind not in self.first or step < self.first[kind]:
            self.first[kind] = step
            self.layers[kind] = []
        if layer and step == self.first[kind] and layer not in self.layers[kind]:
            self.layers[kind].append(layer)
        self.applied = self.applied or applied


def _collect(history: History) -> _Seen:
    seen = _Seen()
    skipped = {s.step for s in sorted_steps(history) if s.skipped}
    for s in sorted_steps(history):
        applied = not s.skipped
        if nonfinite(s.loss):
            seen.add("loss", s.step, None, applied)
        if nonfinite(s.grad_norm_total) or count(s.grad_nonfinite):
            seen.add("grad", s.step, None, applied)
        if nonfinite(s.grad_norm_applied):
            seen.add("applied grad", s.step, None, applied)
        if count(s.param_nonfinite):
            seen.add("param", s.step, None, applied)
    for r in history.layers:
        for kind, attr in _LAYER_FIELDS:
            if count(getattr(r, attr)):
                name = "output" if r.layer in OUTPUT_ROWS else kind
                seen.add(name, r.step, None if r.layer in OUTPUT_ROWS else r.layer, r.step not in skipped)
    for e in history.events:
        if e.kind == "nonfinite" and isinstance(e.step, int) and e.tensor:
            seen.add(str(e.tensor), e.step, e.layer if isinstance(e.layer, str) else None, e.step not in skipped)
    return seen


def _lines(seen: _Seen) -> list[str]:
    lines = []
    for kind, step in sorted(seen.first.items(), key=lambda kv: kv[1]):
        where = f" in {fmt_layers(seen.layers[kind], 3)}" if seen.layers.get(kind) else ""
        lines.append(f"step {step}: first non-finite {kind}{where}")
    grad, applied = seen.first.get("grad"), seen.first.get("applied grad")
    if applied is not None and (grad is None or applied < grad):
        lines.append(f"step {applied}: the gradients optimizer.step() received were non-finite although each layer's "
                     "were finite before clipping")
    elif applied is not None and seen.layers.get("grad"):
        lines.append(f"step {applied}: clipping by a non-finite global norm spreads a NaN into every layer; before "
                     f"clipping only {fmt_layers(seen.layers['grad'], 3)} had non-finite gradients")
    if not seen.applied:
        lines.append("every one of these steps was skipped: the weights did not take the values")
    lines.append("replay the batch with monitor.localize(model, lambda m: compute_loss(m, batch)) to name the module")
    return lines


def check(history: History, findings: list[Finding]) -> list[Finding]:
    """A finding for non-finite values that `findings` (the other rules' output) leave unexplained."""
    seen = _collect(history)
    if not seen.first:
        return []
    explaining = [f for f in findings if CODE in EXPLAINS.get(f.code, ())]
    if seen.applied and any(f.severity == "critical" for f in explaining):
        return []
    if not seen.applied and explaining:
        return []
    first = min(seen.first.values())
    kinds = ", ".join(k for k, _ in sorted(seen.first.items(), key=lambda kv: kv[1]))
    layers = next((seen.layers[k] for k in ("grad", "param", "activation") if seen.layers.get(k)), [])
    severity = "critical" if seen.applied else "warning"
    title = f"Non-finite values from step {first} ({kinds}) that no specific rule explains"
    return [Finding(CODE, severity, title, _lines(seen), first, layers, ())]
