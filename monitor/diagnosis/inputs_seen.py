"""What a History says about the data entering the model: non-finite input events and saved batches.

Readers shared by nonfinite_input (which reports them) and the rules that must not blame a module for
a value it only received (nonfinite_forward, grad_overflow_no_scaler, nonfinite_loss).
"""

from __future__ import annotations

from ..history import Event, History

__all__ = ["input_events", "input_steps", "replay_snippet", "saved_batch_lines", "saved_batches"]


def input_events(history: History) -> list[Event]:
    """"nonfinite" events for tensor "input" (entry-module inputs with NaN/Inf), by step."""
    out = [e for e in history.events if isinstance(e, Event) and e.kind == "nonfinite" and e.tensor == "input"
           and isinstance(e.step, int) and isinstance(e.detail, dict)]
    return sorted(out, key=lambda e: e.step)


def input_steps(history: History) -> set[int]:
    """Steps whose model inputs held non-finite values: whatever went non-finite there came in with the data."""
    return {e.step for e in input_events(history) if e.detail.get("nonfinite") != 0}


def saved_batches(history: History) -> list[Event]:
    """"batch_saved" events (watch(save_bad_batch=True)), by step."""
    out = [e for e in history.events if isinstance(e, Event) and e.kind == "batch_saved" and isinstance(e.step, int)
           and isinstance(e.detail, dict) and isinstance(e.detail.get("path"), str)]
    return sorted(out, key=lambda e: e.step)


def saved_batch_lines(history: History, reason: str) -> list[str]:
    """Evidence lines for the first batch saved for `reason`: its path and the code that replays it."""
    event = next((e for e in saved_batches(history) if e.detail.get("reason") == reason), None)
    if event is None:
        return []
    device = history.run.device if isinstance(history.run.device, str) and history.run.device else "cpu"
    snippet = replay_snippet(event.detail["path"], device, event.detail.get("weights_only") is True)
    return [f"step {event.step}: the batch was saved to {event.detail['path']}",
            f"replay it on your model (names the input tensor, or the module that made the first NaN/Inf): {snippet}"]


def replay_snippet(path: str, device: str = "cpu", weights_only: bool = True) -> str:
    """One line of Python that loads a batch saved by watch(save_bad_batch=True) and replays its first
    entry call with `monitor.localize` (needs `torch`, `monitor` and the user's `model`; weights_only=False
    only where the batch holds objects of the user's own classes)."""
    return (f"call = torch.load({path!r}, map_location={device!r}, weights_only={weights_only})[\"calls\"][0]; "
            "print(monitor.localize(model, lambda m: m.get_submodule(call[\"module\"])"
            "(*call[\"args\"], **call[\"kwargs\"])))")
