"""Checking what a record's rows hold before it becomes a History: a damaged row is an error that names
its table, row and column, never a raw TypeError later or a string diagnosed as if it were a number.

A column's check follows the dataclass field's annotation (StepObs, LayerObs), so a field added later
is checked the same way; an annotation not listed here passes its value through.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from .schema import NAN

__all__ = ["Damaged", "checks_for", "json_value"]


class Damaged(ValueError):
    """A value that does not fit its column: `what` says what was expected."""

    def __init__(self, value: Any, what: str) -> None:
        super().__init__(f"holds {value!r:.80}, expected {what}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise Damaged(v, "an integer")


def _float(v: Any) -> Any:
    if _number(v):
        return v
    if v == NAN:
        return math.nan
    raise Damaged(v, "a number")


def _opt(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _bool(v: Any) -> bool:
    if v in (0, 1) and not isinstance(v, float):
        return bool(v)
    raise Damaged(v, "0 or 1")


def _str(v: Any) -> Any:
    if isinstance(v, str):
        return v
    raise Damaged(v, "text")


def json_value(v: Any, what: str) -> Any:
    """`v` parsed as JSON text. Raises Damaged."""
    if not isinstance(v, str):
        raise Damaged(v, what)
    try:
        return json.loads(v)
    except ValueError:
        raise Damaged(v, what) from None


def _numbers(allow_none: bool) -> Callable[[Any], tuple[Any, ...]]:
    what = "a JSON list of numbers" + (" or nulls" if allow_none else "")

    def check(v: Any) -> tuple[Any, ...]:
        items = [] if v is None else json_value(v, what)
        if not isinstance(items, list) or not all(_number(x) or (allow_none and x is None) for x in items):
            raise Damaged(v, what)
        return tuple(items)

    return check


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "int": _int, "float": _float, "bool": _bool, "str": _str,
    "int | None": _opt(_int), "float | None": _opt(_float), "str | None": _opt(_str),
    "tuple[float, ...]": _numbers(False), "tuple[float | None, ...]": _numbers(True),
}


def checks_for(cls: type, columns: Sequence[str]) -> list[Callable[[Any], Any]]:
    """One check per column (a field of dataclass `cls`): value in the record -> value for `cls`."""
    kinds = {f.name: str(f.type) for f in fields(cls)}
    return [_CHECKS.get(kinds.get(c, ""), lambda v: v) for c in columns]
