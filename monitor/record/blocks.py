"""One sampled step's per-layer rows packed into one block (schema 2): bytes per measured value, not per row.

A block (zlib-compressed) holds the rows' layer ids as runs of consecutive ids (a step's layers come in
model order, so a step of 10,000 layers is a handful of runs), then, for each LayerObs field, the kinds
of its values as runs (None, int, float, int 0, float 0.0) and the non-zero ints (int64) and floats
(float64, NaN and inf included) in row order. Values read back exactly equal (same type, same bits;
any NaN reads back as a NaN); None stays "not measured". Decoding is slicing: no Python work per value
unless kinds alternate row by row.
"""

from __future__ import annotations

import math
import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from itertools import repeat
from typing import Any

from ..history import LayerObs

__all__ = ["BlockError", "decode", "encode"]

_FORMAT = 1
_NONE, _INT, _FLOAT, _ZERO_INT, _ZERO_FLOAT = range(5)
_CONST = {_NONE: None, _ZERO_INT: 0, _ZERO_FLOAT: 0.0}
_HEAD = struct.Struct("<BIIH")  # format, rows, id runs, fields
_RUN = struct.Struct("<BI")  # kind, length
_COUNT = struct.Struct("<I")
_ID_RUN = struct.Struct("<II")  # first id, length


def _maker() -> Callable[..., LayerObs]:
    """LayerObs from positional values (step, layer, fields in order). While LayerObs is a plain frozen
    dataclass (no __slots__, no __post_init__) its objects get their __dict__ filled directly: the frozen
    __init__'s one object.__setattr__ per field is ~40% of reading a large record. Equal to
    LayerObs(*values) either way (tests/monitor/test_record_schema.py)."""
    if "__slots__" in LayerObs.__dict__ or hasattr(LayerObs, "__post_init__"):
        return LayerObs
    keys, new = [f.name for f in fields(LayerObs)], object.__new__

    def make(*values: Any) -> LayerObs:
        obj = new(LayerObs)
        obj.__dict__.update(zip(keys, values))
        return obj

    return make


_MAKE = _maker()
_FIELDS = [f.name for f in fields(LayerObs)][2:]  # after step and layer, in order


class BlockError(ValueError):
    """A block that cannot be decoded (damaged, or inconsistent with the record's layer names)."""


def _kind(v: Any) -> int:
    if v is None:
        return _NONE
    if isinstance(v, float):
        return _ZERO_FLOAT if v == 0.0 and math.copysign(1.0, v) > 0 else _FLOAT
    if isinstance(v, int):
        return _ZERO_INT if v == 0 else _INT
    raise TypeError(f"a LayerObs value must be None, an int or a float, got {type(v).__name__} {v!r}")


def _runs(items: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for x in items:
        if runs and runs[-1][0] == x:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    return runs


def _id_runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return [(a, n) for a, n in runs]


def encode(rows: Sequence[LayerObs], ids: Sequence[int], field_names: Sequence[str]) -> bytes:
    """The block of `rows` (one step); `ids[i]` is the layer id of `rows[i]`. Raises TypeError for a value
    that is not None / int / float."""
    id_runs = _id_runs(ids)
    parts = [_HEAD.pack(_FORMAT, len(rows), len(id_runs), len(field_names))]
    parts += [_ID_RUN.pack(a, n) for a, n in id_runs]
    for name in field_names:
        values = [getattr(r, name) for r in rows]
        kinds = [_kind(v) for v in values]
        runs = _runs(kinds)
        ints = array("q", [v for v, k in zip(values, kinds) if k == _INT])
        floats = array("d", [v for v, k in zip(values, kinds) if k == _FLOAT])
        parts.append(_COUNT.pack(len(runs)))
        parts += [_RUN.pack(k, n) for k, n in runs]
        parts += [_COUNT.pack(len(ints)), ints.tobytes(), _COUNT.pack(len(floats)), floats.tobytes()]
    return zlib.compress(b"".join(parts), 1)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: struct.Struct) -> tuple[Any, ...]:
        out = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return out

    def values(self, typecode: str) -> list[Any]:
        (n,) = self.take(_COUNT)
        a = array(typecode)
        end = self.pos + n * a.itemsize
        if end > len(self.data):
            raise BlockError(f"{n} values announced, the block ends before")
        a.frombytes(self.data[self.pos:end])
        self.pos = end
        return a.tolist()


def _column(r: _Reader, rows: int) -> list[Any]:
    (n_runs,) = r.take(_COUNT)
    runs = [r.take(_RUN) for _ in range(n_runs)]
    ints, floats = r.values("q"), r.values("d")
    if len(runs) == 1 and runs[0][0] in _CONST:
        out = [_CONST[runs[0][0]]] * runs[0][1]
    else:
        out, i, f = [], 0, 0
        for kind, n in runs:
            if kind == _INT:
                out += ints[i:i + n]
                i += n
            elif kind == _FLOAT:
                out += floats[f:f + n]
                f += n
            elif kind in _CONST:
                out += [_CONST[kind]] * n
            else:
                raise BlockError(f"unknown value kind {kind}")
        if i != len(ints) or f != len(floats):
            raise BlockError("value counts do not match their kinds")
    if len(out) != rows:
        raise BlockError(f"a column of {len(out)} values in a block of {rows} rows")
    return out


def decode(blob: bytes, step: int, names: Sequence[str], field_names: Sequence[str]) -> list[LayerObs]:
    """The LayerObs rows of one block. `names[id]` is the layer name of id; `field_names` are the fields the
    block holds (the record's "layer_fields"): one LayerObs lacks is ignored, one the block lacks reads as
    None. Raises BlockError."""
    try:
        r = _Reader(zlib.decompress(blob))
        fmt, rows, n_id_runs, n_fields = r.take(_HEAD)
        if fmt != _FORMAT or n_fields != len(field_names):
            raise BlockError(f"block format {fmt} with {n_fields} fields, expected format {_FORMAT} with "
                             f"{len(field_names)}")
        layer_names: list[str] = []
        for _ in range(n_id_runs):
            first, n = r.take(_ID_RUN)
            if first + n > len(names):
                raise BlockError(f"layer ids {first}..{first + n - 1} beyond the {len(names)} layer names")
            layer_names += names[first:first + n]
        if len(layer_names) != rows:
            raise BlockError(f"{len(layer_names)} layer ids for {rows} rows")
        columns = {name: _column(r, rows) for name in field_names}
        if r.pos != len(r.data):
            raise BlockError(f"{len(r.data) - r.pos} bytes left over")
    except (zlib.error, struct.error) as exc:
        raise BlockError(str(exc)) from None
    none = [None] * rows
    return list(map(_MAKE, repeat(step, rows), layer_names, *(columns.get(f, none) for f in _FIELDS)))
