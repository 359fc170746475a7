"""The page header in words: the run's set-up (optimizer, scaler, dtypes) and its health status."""

from __future__ import annotations

from collections import Counter

from monitor.findings import Finding
from monitor.history import History, LayerInfo, RunInfo

__all__ = ["dtype_text", "optimizer_text", "run_facts", "scaler_text", "state_text", "status", "status_line"]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def status(findings: list[Finding]) -> str:
    """The most severe finding's severity, or "healthy" when there is none."""
    for severity in ("critical", "warning", "info"):
        if any(f.severity == severity for f in findings):
            return severity
    return "healthy"


def status_line(history: History, findings: list[Finding]) -> str:
    """One sentence for the status banner; a healthy run says so plainly."""
    seen = f"{len(history.steps)} observed steps (last step {history.last_step})"
    if not findings:
        if not history.steps:
            return "No findings, but no optimizer step has been observed yet: nothing to judge beyond the set-up."
        return f"Healthy: no findings over {seen}."
    counts = Counter(f.severity for f in findings)
    parts = [f"{counts[s]} {s}" for s in ("critical", "warning", "info") if counts[s]]
    noun = "finding" if len(findings) == 1 else "findings"
    if status(findings) == "critical":
        observed = any(f.severity == "critical" and (f.first_step or 0) > 0 for f in findings)
        verdict = "training is broken" if observed else "this set-up will break training (predicted before step 1)"
        return f"{', '.join(parts)} {noun} over {seen}: {verdict}; fixes below (best first)."
    return f"No critical finding over {seen}; {', '.join(parts)} {noun} to review."


def optimizer_text(run: RunInfo) -> str:
    """e.g. "AdamW: lr 0.001, eps 1e-08, betas (0.9, 0.999), weight decay 0.01" (one clause per group)."""
    if not run.optimizer:
        return "unknown"
    groups = []
    for g in run.groups:
        bits = [f"lr {_num(g.lr)}"]
        if g.eps is not None:
            bits.append(f"eps {_num(g.eps)}")
        if g.betas:
            bits.append(f"betas ({g.betas[0]:g}, {g.betas[1]:g})")
        if g.weight_decay:
            bits.append(f"weight decay {_num(g.weight_decay)}")
        bits += [flag for flag in ("amsgrad", "fused") if getattr(g, flag)]
        groups.append(", ".join(bits))
    if len(groups) == 1:
        return f"{run.optimizer}: {groups[0]}"
    return f"{run.optimizer}: " + "; ".join(f"group {i}: {text}" for i, text in enumerate(groups))


def state_text(run: RunInfo, info: LayerInfo, stepped: bool = True) -> str:
    """A layer's optimizer-state dtype, or why it has none: "master copy" (the optimizer updates an fp32
    master copy, not these tensors), "none yet" (no optimizer step so far: state is made at step 1),
    "none" (an optimizer without state, e.g. SGD without momentum)."""
    if info.state_dtype:
        return info.state_dtype
    if not info.in_optimizer:
        return "master copy" if run.master_weights else "not in the optimizer"
    return "none" if stepped else "none yet"


def dtype_text(run: RunInfo, state: bool = False, stepped: bool = True) -> str:
    """Trainable layers per parameter dtype (or optimizer state, state_text()), e.g. "float16 x2, float32 x2".
    `stepped`: an optimizer step was observed (before it, Adam has made no state)."""
    counts = Counter((state_text(run, info, stepped) if state else info.dtype) or "none"
                     for info in run.layers.values() if info.trainable)
    if not counts:
        return "-"
    return ", ".join(f"{dtype} x{n}" for dtype, n in sorted(counts.items()))


def scaler_text(history: History) -> str:
    """The loss scaling in use, with the last scale seen and the skipped-step count."""
    run = history.run
    name = {"grad_scaler": "GradScaler", "custom": "custom loss scale", "none": "none",
            "disabled": "GradScaler (disabled)"}.get(run.scaler, run.scaler)
    if run.scaler in ("none", "disabled"):
        return name
    scales = [s.loss_scale for s in history.steps if s.loss_scale is not None]
    skipped = history.steps[-1].skipped_total if history.steps else 0
    return f"{name} (last scale {_num(scales[-1] if scales else None)}, {skipped} skipped steps)"


def run_facts(history: History) -> list[tuple[str, str]]:
    """(label, value) rows describing the run's set-up, for the header table."""
    run = history.run
    return [
        ("run / rank", f"{run.run} / {run.rank}"),
        ("optimizer", optimizer_text(run)),
        ("loss scaling", scaler_text(history)),
        ("parameter dtypes", dtype_text(run)),
        ("optimizer state dtypes", dtype_text(run, state=True, stepped=any(not s.skipped for s in history.steps))),
        ("fp32 master weights", "yes" if run.master_weights else "no"),
        ("autocast", run.autocast or "off"),
        ("torch / device", f"{run.torch_version or '?'} / {run.device}"),
        ("sampled every", f"{run.every} step(s)"),
    ]
