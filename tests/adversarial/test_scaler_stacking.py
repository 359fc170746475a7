"""Several watchers on one GradScaler (issue #9): each counts every skip the scaler made (raw truth: the
scale fell), and however many there are and in whatever order they close, `scaler.update` is left
exactly as it was - the class's method, or the instance attribute someone else had put there."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import monitor
from tests.models import batch

from .runs import setup

SKIP_AT = (2, 4)  # batches holding an inf: the scaler skips those steps


def step(model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, i: int) -> bool:
    """One GradScaler iteration; True when the scaler skipped it (raw truth: its scale fell)."""
    x, y = batch(i)
    if i in SKIP_AT:
        x = x.clone()
        x[0, 0] = float("inf")
    opt.zero_grad(set_to_none=True)
    before = scaler.get_scale()
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    return scaler.get_scale() < before


def _is_the_class_method(scaler: torch.amp.GradScaler) -> bool:
    return "update" not in vars(scaler) and scaler.update.__func__ is type(scaler).update


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_close_order_restores_update_and_each_watcher_counts_every_skip(order):
    model, opt, scaler = setup(scaler=True)
    watchers = [monitor.watch(model, opt, scaler=scaler, port=None, run=f"w{k}") for k in range(3)]
    skipped = [i for i in range(1, 6) if step(model, opt, scaler, i)]
    assert skipped == list(SKIP_AT)
    for k in order:
        watchers[k].close()
    assert _is_the_class_method(scaler)
    for w in watchers:
        assert w.counters.skipped_steps == len(SKIP_AT) and w.counters.errors == 0
        assert [s.step for s in w.history().steps if s.skipped] == list(SKIP_AT)


def test_a_watcher_closed_mid_run_stops_counting_the_others_go_on():
    model, opt, scaler = setup(scaler=True)
    first = monitor.watch(model, opt, scaler=scaler, port=None, run="first")
    second = monitor.watch(model, opt, scaler=scaler, port=None, run="second")
    step(model, opt, scaler, 1)
    step(model, opt, scaler, 2)  # skipped: both see it
    first.close()
    step(model, opt, scaler, 3)
    step(model, opt, scaler, 4)  # skipped: only the second still watches
    assert (first.counters.skipped_steps, second.counters.skipped_steps) == (1, 2)
    third = monitor.watch(model, opt, scaler=scaler, port=None, run="third")  # joins the live wrapper
    second.close()
    step(model, opt, scaler, 2)
    assert third.counters.skipped_steps == 1
    third.close()
    assert _is_the_class_method(scaler)


def test_an_update_someone_else_installed_is_kept_before_and_after():
    model, opt, scaler = setup(scaler=True)
    calls: list[str] = []
    original = scaler.update

    def theirs(*args, **kwargs):  # the user's (or another library's) own wrapper, installed first
        calls.append("theirs")
        return original(*args, **kwargs)

    scaler.update = theirs
    a = monitor.watch(model, opt, scaler=scaler, port=None, run="a")

    def later(*args, **kwargs):  # ... and one installed over ours while we watch
        calls.append("later")
        return a_wrapper(*args, **kwargs)

    a_wrapper = scaler.update
    scaler.update = later
    b = monitor.watch(model, opt, scaler=scaler, port=None, run="b")
    step(model, opt, scaler, 2)
    a.close()
    b.close()
    assert vars(scaler)["update"] is later  # not ours: left alone
    assert a.counters.skipped_steps == b.counters.skipped_steps == 1
    calls.clear()
    assert step(model, opt, scaler, 4)  # still a working scaler: ours passes straight through now
    assert calls == ["later", "theirs"]
    c = monitor.watch(model, opt, scaler=scaler, port=None, run="c")
    c.close()
    assert vars(scaler)["update"] is later
