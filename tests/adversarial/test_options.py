"""Every watch() option validated (issue #9, class 5): a bad value is a ConfigError that names the option
and says what is expected - never a raw TypeError/ValueError, silent misuse or the wrong culprit - and a
refused watch() leaves nothing behind: no hook, no wrapped scaler, no record file, no target file, no
port held."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

import monitor
from monitor.integrations.trellis import watch_trellis
from monitor.watcher import WATCH_OPTIONS
from tests.integrations.trellis_standin import StandInTrainer
from tests.monitor.test_identity import hook_counts
from tests.realservers import free_port

from .runs import setup


def _raising_scale() -> float:
    raise RuntimeError("trainer.log_scale is not set yet")


# (options, the option the message must name, what it must say)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"group_depth": 0}, "group_depth", "integer >= 1"),
    ({"group_depth": -1}, "group_depth", "integer >= 1"),
    ({"group_depth": "2"}, "group_depth", "integer >= 1"),
    ({"group_depth": 1.5}, "group_depth", "integer >= 1"),
    ({"rank": "abc"}, "rank", "integer >= 0"),
    ({"rank": -1}, "rank", "integer >= 0"),
    ({"rank": True}, "rank", "integer >= 0"),
    ({"update_ratio": "no"}, "update_ratio", "True or False"),
    ({"update_ratio": None}, "update_ratio", "True or False"),
    ({"step_pre_hook": "yes"}, "step_pre_hook", "True or False"),
    ({"run": 5}, "run", "non-empty string"),
    ({"run": "  "}, "run", "non-empty string"),
    ({"record": 5}, "record", "file path"),
    ({"record": "TMP"}, "record", "is a folder"),
    ({"targets_dir": 5}, "targets_dir", "folder path"),
    ({"targets_dir": "TMP/a-file"}, "targets_dir", "not a folder"),
    ({"max_layers": 0}, "max_layers", "integer >= 1"),
    ({"max_layers": "10"}, "max_layers", "integer >= 1"),
    ({"export_layers": "all"}, "export_layers", "'auto'"),
    ({"every": 0}, "every", "integer >= 1"),
    ({"port": -1}, "port", "0-65535"),
    ({"port": "9108"}, "port", "0-65535"),
    ({"host": "no-such-host.invalid"}, "host", "cannot be resolved"),
    ({"host": "192.0.2.1"}, "host", "not an address this machine can serve on"),  # TEST-NET-1: never local
    ({"host": 5}, "host", "an address to bind"),
    ({"on_nonfinite": "raise"}, "on_nonfinite", "one of 'warn'"),
    ({"on_nonfinite": "skip", "max_skips": 0}, "max_skips", "integer >= 1"),
    ({"on_nonfinite": "stop", "checkpoint": "last.pt"}, "checkpoint", "callable"),
    ({"on_nonfinite": "skip", "step_pre_hook": False}, "on_nonfinite", "step pre-hook"),
    ({"scaler": None, "loss_scale": lambda: "abc"}, "loss_scale", "as a number"),
    ({"scaler": None, "loss_scale": _raising_scale}, "loss_scale", "trainer.log_scale is not set yet"),
    ({"scaler": None, "loss_scale": lambda: 0.0}, "loss_scale", "positive"),
    ({"save_bad_batch": "yes"}, "save_bad_batch", "True or False"),
    ({"record": None, "save_bad_batch": True}, "save_bad_batch", "needs record="),
    ({"trainer": 5}, "trainer", "a string"),
    ({"max_layer": 3}, "max_layer", "did you mean max_layers?"),
    ({"bogus": 1}, "bogus", "Valid options: scaler, loss_scale, every"),
]


def _ids() -> list[str]:
    return ["-".join(f"{k}={v!r}"[:30] for k, v in opts.items()) for opts, _, _ in BAD]


@pytest.mark.parametrize("options,name,expected", BAD, ids=_ids())
def test_bad_option_is_a_config_error_naming_it_and_nothing_is_left_behind(options, name, expected, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    options = {k: v.replace("TMP", str(tmp_path)) if isinstance(v, str) and "TMP" in v else v
               for k, v in options.items()}
    model, opt, scaler = setup(scaler=True)
    before = hook_counts(model, opt)
    port = free_port()
    args = {"scaler": scaler, "port": port, "record": tmp_path / "run.sqlite", "targets_dir": tmp_path / "targets",
            "run": "options", **options}
    with pytest.raises(monitor.ConfigError) as err:
        monitor.watch(model, opt, **args)
    message = str(err.value)
    assert message.startswith(f"watch(): {name}") or f" {name}=" in message or f"{name}()" in message, message
    assert expected in message, message
    assert hook_counts(model, opt) == before and "update" not in vars(scaler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no record, no targets folder
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port was never taken (or was given back)


def test_host_is_checked_only_where_it_is_used():
    model, opt, _ = setup()
    monitor.watch(model, opt, port=None, host="192.0.2.1", run="options").close()  # no endpoint: no bind


def test_boundary_values_are_accepted():
    model, opt, _ = setup()
    with monitor.watch(model, opt, port=None, run="r", rank=0, group_depth=1, update_ratio=False,
                       step_pre_hook=True, max_layers=1, every=1, loss_scale=lambda: 1.0) as w:
        assert (w.run, w.rank, w.layers.depth) == ("r", 0, 1)


def test_targets_dir_from_the_environment_is_checked_and_named(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("SLATMON_TARGETS_DIR", str(tmp_path / "f"))
    model, opt, _ = setup()
    with pytest.raises(monitor.ConfigError, match=r"\$SLATMON_TARGETS_DIR=.* is not a folder"):
        monitor.watch(model, opt, port=0, run="options")
    monitor.watch(model, opt, port=None, run="options").close()  # no endpoint: no targets


def test_valid_option_list_is_watchers_signature():
    import inspect

    names = list(inspect.signature(monitor.Watcher.__init__).parameters)
    assert list(WATCH_OPTIONS) == names[3:] and "group_depth" in WATCH_OPTIONS


def test_integration_refuses_an_unknown_option_before_touching_the_trainer():
    trainer = StandInTrainer("amp", max_steps=1)
    with pytest.raises(monitor.ConfigError, match=r"watch_trellis\(\): unknown option recrod=.*did you mean record"):
        watch_trellis(trainer, port=None, recrod="runs/x.sqlite")
    assert "run_step" not in vars(trainer) and "update" not in vars(trainer.scaler)
    assert not Path("runs/x.sqlite").exists() and not os.path.exists("recrod")
