"""Record schema 2 reads back exactly what was written (per-layer blocks included), and schema-1 records
written by slat-monitor 0.1 still read as the identical History."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.history import LayerObs, StepObs
from monitor.record import RecordWriter, blocks, read_record
from monitor.record.schema import LAYER_FIELDS
from tests.models import watched_run

from .record_v1 import as_json, v1_record


def test_a_schema_1_record_reads_as_0_1_read_it(tmp_path):
    expected = v1_record(tmp_path / "v1.sqlite")
    h = read_record(tmp_path / "v1.sqlite")
    assert as_json(h) == as_json(expected)
    assert {e.kind for e in h.events} == {"nonfinite", "localized"}  # no record_* event: 0.1 wrote no marker
    assert any(s.skip_reason == "user" for s in h.steps) and any(math.isnan(r.grad_norm or 0) for r in h.layers)


def test_schema_2_keeps_every_observation_of_a_schema_1_record(tmp_path):
    """The 0.1 run's observations written again by today's writer read back identical."""
    h = v1_record(tmp_path / "v1.sqlite")
    w = RecordWriter(str(tmp_path / "v2.sqlite"))
    w.put_meta("run", dataclasses.asdict(h.run))
    w.put_meta("preflight", [f.to_dict() for f in h.preflight])
    w.put_events(h.events)
    for s in h.steps:
        w.put_step(s, h.layer_rows(s.step), [])
    w.close()
    again = read_record(tmp_path / "v2.sqlite")
    assert as_json(again) == as_json(h)


def test_the_record_is_the_live_history(tmp_path):
    """fp16 AdamW eps=1e-8: NaN parameters, [output] rows, localisation events - read back exactly as the
    watcher held them."""
    w = watched_run(tmp_path / "r.sqlite", steps=5)
    assert as_json(read_record(tmp_path / "r.sqlite")) == as_json(w.history())


values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0, 0.0, -0.0, 1, math.inf, -math.inf, math.nan]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.lists(values, min_size=len(LAYER_FIELDS),
                                                        max_size=len(LAYER_FIELDS))), max_size=40))
def test_a_block_reads_back_every_value_exactly(rows):
    names = [f"layer{i}" for i in range(31)]
    obs = [LayerObs(7, names[i], *v) for i, v in rows]
    back = blocks.decode(blocks.encode(obs, [i for i, _ in rows], LAYER_FIELDS), 7, names, LAYER_FIELDS)
    assert len(back) == len(obs)
    for a, b in zip(obs, back):
        for f in dataclasses.fields(LayerObs):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert type(x) is type(y) and (x == y or (x != x and y != y)), (f.name, x, y)
            if isinstance(x, float) and x == 0:
                assert math.copysign(1, x) == math.copysign(1, y)


def test_decoded_rows_are_real_layerobs():
    """Made without LayerObs's own __init__ (blocks._maker): equal, hashable, frozen, replaceable."""
    made = LayerObs(3, "a", grad_norm=1.5, grad_nonfinite=0, activation_nonfinite=None)
    [back] = blocks.decode(blocks.encode([made], [0], LAYER_FIELDS), 3, ["a"], LAYER_FIELDS)
    assert type(back) is LayerObs and back == made and hash(back) == hash(made) and repr(back) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.grad_norm = 2.0  # type: ignore[misc]
    assert dataclasses.replace(back, step=4) == dataclasses.replace(made, step=4)


def test_a_block_with_fewer_or_more_fields_than_layerobs():
    """A record written when LayerObs had other fields: missing ones read as None, unknown ones are dropped."""
    written = SimpleNamespace(step=1, layer="a", grad_norm=2.0, future_field=5, activation_nonfinite=3)
    held = ["grad_norm", "future_field", "activation_nonfinite"]
    back = blocks.decode(blocks.encode([written], [0], held), 1, ["a"], held)  # type: ignore[list-item]
    assert back == [LayerObs(1, "a", grad_norm=2.0, activation_nonfinite=3)]


@pytest.mark.parametrize("damage", [b"", b"\x00" * 10, "cut", "ids"])
def test_a_damaged_block_is_a_block_error(damage):
    rows = [LayerObs(1, "a", grad_norm=1.0), LayerObs(1, "b", param_norm=2.0)]
    data = blocks.encode(rows, [0, 1], LAYER_FIELDS)
    if damage == "cut":
        import zlib
        data = zlib.compress(zlib.decompress(data)[:-3])
    elif not isinstance(damage, str):
        data = damage
    names = ["a"] if damage == "ids" else ["a", "b"]
    with pytest.raises(blocks.BlockError):
        blocks.decode(data, 1, names, LAYER_FIELDS)


def test_a_value_the_codec_cannot_hold_is_refused():
    with pytest.raises(TypeError, match="None, an int or a float"):
        blocks.encode([LayerObs(1, "a", grad_norm="1.0")], [0], LAYER_FIELDS)  # type: ignore[arg-type]


def test_steps_without_rows_and_a_step_written_twice(tmp_path):
    """A skipped step has no rows; a guard verdict read one step late writes a step again (its rows stay)."""
    w = RecordWriter(str(tmp_path / "r.sqlite"))
    w.put_step(StepObs(step=1), [LayerObs(1, "a", grad_norm=1.0)], [])
    w.put_step(StepObs(step=2, sampled=False, skipped=True, skip_reason="scaler"), [], [])
    w.put_step(StepObs(step=1, skipped=True, skip_reason="nonfinite_grad"), [], [])
    w.close()
    h = read_record(tmp_path / "r.sqlite")
    assert [(s.step, s.skip_reason) for s in h.steps] == [(1, "nonfinite_grad"), (2, "scaler")]
    assert h.layers == [LayerObs(1, "a", grad_norm=1.0)]
