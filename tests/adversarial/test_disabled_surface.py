"""SLATMON_DISABLE=1 (issue #9): the stand-in watcher has Watcher's whole public surface - the same
attributes, of the same types, and the same method signatures - so a script written against one runs
against the other; it hooks, serves and records nothing, and checks its arguments all the same."""

from __future__ import annotations

import inspect

import pytest

import monitor
from monitor.disabled import DisabledWatcher
from tests.monitor.test_identity import hook_counts

from .runs import STEPS, setup, train


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


@pytest.fixture
def pair(tmp_path):
    """(a live Watcher, a DisabledWatcher) over the same kind of set-up, with the same arguments."""
    model, opt, _ = setup()
    live = monitor.watch(model, opt, port=None, run="same")
    model2, opt2, _ = setup()
    yield live, DisabledWatcher(model2, opt2, port=None, run="same")
    live.close()


def test_public_attributes_and_their_types_match(pair):
    live, off = pair
    assert _public(live) == _public(off)
    assert _public(monitor.Watcher) == _public(DisabledWatcher)  # methods and properties, on the classes
    for name in sorted(_public(live)):
        a, b = getattr(live, name), getattr(off, name)
        if callable(a):
            assert inspect.signature(a) == inspect.signature(b), name
        else:
            assert type(a) is type(b), name
    assert inspect.signature(monitor.Watcher.__init__) == inspect.signature(DisabledWatcher.__init__)


def test_disabled_watch_hooks_serves_and_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SLATMON_DISABLE", "1")
    model, opt, scaler = setup(scaler=True)
    before = hook_counts(model, opt)
    with monitor.watch(model, opt, scaler=scaler, port=0, record=tmp_path / "r.sqlite", run="off",
                       rank=2) as w:
        assert isinstance(w, DisabledWatcher) and hook_counts(model, opt) == before
        assert "update" not in vars(scaler)
        train(model, opt, STEPS, scaler=scaler, watcher=w)
        w.step_skipped(loss=1.0)
        w.before_optimizer_step()
        assert (w.run, w.rank, w.url, w.record_path) == ("off", 2, None, None)
        assert w.counters.step == 0 and w.counters.errors == 0 and w.snapshot.run == "off"
        assert w.findings() == [] and w.history().steps == [] and w.history().run.optimizer == "AdamW"
        assert set(w.info.layers) == set(w.layers.names) == {"input_layer", "blocks.0", "blocks.2", "out_layer"}
    assert list(tmp_path.iterdir()) == [] and hook_counts(model, opt) == before
    assert "disabled" in repr(w)


def test_disabled_watch_still_refuses_bad_options(monkeypatch):
    monkeypatch.setenv("SLATMON_DISABLE", "1")
    model, opt, _ = setup()
    with pytest.raises(monitor.ConfigError, match="group_depth"):
        monitor.watch(model, opt, port=None, group_depth=0)
    with pytest.raises(monitor.ConfigError, match="did you mean every"):
        monitor.watch(model, opt, port=None, evry=2)
