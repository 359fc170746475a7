"""Which call is the culprit (monitor/culprit.py): pure tests over hand-built call trees."""

from __future__ import annotations

import math

from monitor.culprit import Call, backward_culprit, culprit_detail, forward_culprit

NAN = math.nan


def call(name: str, parent: int | None, *, ins: int = 0, outs: int = 0, g_out: float | None = 1.0,
         g_in: float | None = 1.0) -> Call:
    return Call(name, name.title(), parent, "float16", NAN if ins else 1.0, ins, NAN if outs else 2.0, outs,
                g_out, g_in, 0 if g_in is None or math.isfinite(g_in) else 5)


def test_a_child_that_made_it_is_named_not_its_parents() -> None:
    calls = [call("root", None, outs=4), call("block", 0, outs=4), call("block.a", 1, outs=4),
             call("block.b", 1, ins=4, outs=4), call("head", 0, ins=4, outs=4)]
    assert forward_culprit(calls) == 2


def test_a_parents_own_code_between_finite_children() -> None:
    calls = [call("root", None, outs=4), call("block", 0, outs=4), call("block.a", 1),
             call("block.b", 1, ins=4, outs=4), call("head", 0, ins=4, outs=4)]
    assert forward_culprit(calls) == 1
    assert culprit_detail(calls, 1, "forward") == {"module_type": "Block", "own_code": True, "parent": "root",
                                                   "after": ["block.a"], "fed_to": "block.b"}


def test_first_of_two_disjoint_culprits_and_none_when_all_finite() -> None:
    calls = [call("root", None, outs=4), call("x", 0, outs=1), call("y", 0, ins=1, outs=2), call("z", 0, outs=3)]
    assert forward_culprit(calls) == 1
    assert forward_culprit([call("root", None), call("x", 0)]) is None
    assert forward_culprit([call("root", None, ins=3, outs=3), call("x", 0, ins=3, outs=3)]) is None  # bad data


def test_backward_deepest_with_finite_forward_and_output_gradient() -> None:
    calls = [call("root", None, g_in=NAN), call("block", 0, g_in=NAN), call("block.a", 1, g_out=NAN, g_in=NAN),
             call("block.b", 1), call("head", 0)]
    assert backward_culprit(calls) == 1  # its own backward, between a (received the NaN) and b (finite)
    calls[3] = call("block.b", 1, g_in=NAN)
    calls[2] = call("block.a", 1, g_out=NAN, g_in=NAN)
    assert backward_culprit(calls) == 3
    # non-finite forward values explain a non-finite backward: not a backward culprit
    assert backward_culprit([call("root", None, outs=2, g_in=NAN)]) is None
