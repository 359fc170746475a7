"""Stopping: call the user's `checkpoint` with the last good state, then build the `GuardStop`.

Called only after the failing step was kept out of the weights (hidden gradients, found_inf, or the
undo copy restored), so `model.state_dict()` / `optimizer.state_dict()` are the last good state.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import GuardStop
from ..findings import Finding

# `guard` below is the policy.Guard asking (typed Any: policy.py imports this module, and the
# package keeps its imports acyclic, type-only ones included).
Guard = Any

__all__ = ["good_state", "stop_error"]

log = logging.getLogger("monitor")

WHAT = {
    "nonfinite_grad": "the gradients were not finite (NaN/Inf, or squares beyond fp32)",
    "nonfinite_update": "the gradients were finite but the update made parameters or optimizer state "
                        "non-finite",
}
# Codes that explain each reason, most specific first; any other critical finding comes after them.
EXPLAINS = {
    "nonfinite_grad": ("nonfinite_forward", "nonfinite_loss", "grad_overflow_no_scaler", "grad_explosion",
                       "loss_scale_collapse", "lr_too_high"),
    "nonfinite_update": ("adam_eps_underflow", "fp16_optimizer_state", "nonfinite_after_update",
                         "lr_too_high"),
}
FALLBACK_FIX = {
    "nonfinite_grad": "localise the first non-finite activation (monitor.localize(model, run_batch)); "
                      "lower the learning rate, clip gradients, or use a GradScaler under fp16",
    "nonfinite_update": "keep the optimizer state in fp32 (fp32 master weights) or raise Adam's eps to "
                        "1e-4 for fp16 state",
}


def good_state(guard: Guard) -> dict[str, Any]:
    """What `checkpoint=` receives: {"step": last applied step, "model": ..., "optimizer": ...}
    (state_dict()s by reference: save them before training continues)."""
    return {"step": guard.last_good, "model": guard.model.state_dict(), "optimizer": guard.optimizer.state_dict()}


def pick_finding(findings: list[Finding], reason: str) -> Finding | None:
    by_code = {f.code: f for f in findings}
    for code in EXPLAINS.get(reason, ()):
        if code in by_code and by_code[code].severity != "info":
            return by_code[code]
    return next((f for f in findings if f.severity == "critical"), None)


def stop_error(guard: Guard, step: int, reason: str) -> GuardStop:
    """Checkpoint first (errors are logged, named in the message, and chained), then the exception."""
    try:
        finding = pick_finding(guard.findings(), reason)
    except Exception:  # the message must not fail: name the reason without a finding
        log.exception("slat-monitor: diagnosis for the guard's stop message failed")
        finding = None
    why = (f"after {guard.consecutive} consecutive skipped steps (max_skips={guard.max_skips})"
           if guard.mode == "skip" else "(on_nonfinite='stop')")
    kept = (f"those after step {guard.last_good}" if guard.last_good else "their initial values")
    msg = (f"slat-monitor stopped training at step {step} {why}: {WHAT.get(reason, reason)}. "
           f"Nothing of that step was applied; weights and optimizer state are {kept}.")
    if finding is not None:
        fix = finding.fixes[0].summary if finding.fixes else FALLBACK_FIX.get(reason, "")
        msg += f" Finding {finding.code}: {finding.title.rstrip('.')}. Fix: {fix.rstrip('.')}."
    else:
        msg += f" Fix: {FALLBACK_FIX.get(reason, 'see slat-monitor diagnose')}."
    failed: BaseException | None = None
    if guard.checkpoint is not None:
        try:
            guard.checkpoint(good_state(guard))
            msg += " checkpoint= was called with that state."
        except Exception as exc:
            log.exception("slat-monitor: the checkpoint= callable failed")
            msg += f" checkpoint= raised {type(exc).__name__}: {exc}."
            failed = exc
    err = GuardStop(msg, step=step, reason=reason, finding=None if finding is None else finding.code)
    err.__cause__ = failed
    return err
