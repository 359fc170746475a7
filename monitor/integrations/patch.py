"""Wrap one method of one object instance (never its class) and put back exactly what was there.

Used only on trainer objects (TRELLIS's trainer), never on the user's model, optimizer or scaler.
The wrapper is stored in the instance's `__dict__`; `restore()` pops it again, or puts back an
instance attribute of that name that existed before. Idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["InstancePatch"]

_MISSING: Any = object()


class InstancePatch:
    """`obj.<name>` replaced by `make(original)` until `restore()`; `original` is the bound method
    (or callable attribute) as it was looked up when patching."""

    def __init__(self, obj: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self.obj, self.name = obj, name
        self._saved = obj.__dict__.get(name, _MISSING)
        self.original = getattr(obj, name)
        self.wrapper = make(self.original)
        setattr(obj, name, self.wrapper)

    def restore(self) -> None:
        if self.obj is None:
            return
        if self.obj.__dict__.get(self.name, _MISSING) is self.wrapper:  # nobody re-patched it over us
            if self._saved is _MISSING:
                del self.obj.__dict__[self.name]
            else:
                self.obj.__dict__[self.name] = self._saved
        self.obj = None
