"""The guard of `watch(..., on_nonfinite="skip" | "stop")`: keeps non-finite steps out of the weights.

`policy.Guard` decides per step; `flags` computes device-side non-finite flags (agreed across ranks);
`undo` keeps the copy that restores a step whose update went non-finite; `stop` builds `GuardStop`.
"""

from __future__ import annotations

from .policy import GRAD, UPDATE, Guard
from .undo import needs_copy

__all__ = ["GRAD", "UPDATE", "Guard", "needs_copy"]
