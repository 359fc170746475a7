"""Runs of consecutive steps over a threshold, for the rules that need a trend to be sustained."""

from __future__ import annotations

__all__ = ["first_sustained", "sustained_severity"]


def first_sustained(values: list[tuple], threshold: float, length: int) -> list[tuple] | None:
    """The first `length` consecutive items whose second field is >= `threshold` (items are
    per-step tuples `(step, value, ...)` in step order), or None."""
    run: list[tuple] = []
    for v in values:
        run = [*run, v] if v[1] >= threshold else []
        if len(run) >= length:
            return run
    return None


def sustained_severity(values: list[tuple], critical: float, warning: float,
                       length: int) -> tuple[list[tuple] | None, str]:
    """(first sustained run >= `critical`, "critical"), else (first >= `warning`, "warning"),
    else (None, "")."""
    run = first_sustained(values, critical, length)
    if run is not None:
        return run, "critical"
    run = first_sustained(values, warning, length)
    return (run, "warning") if run is not None else (None, "")

