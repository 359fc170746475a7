"""The monitor never breaks training (issue #9, class 1): a fault injected into each place our code runs
inside the training process - every hook, the GradScaler wrapper, the end-of-backward callback, the
guard, localisation, the record and HTTP threads, close(), the SIGTERM handler, the TRELLIS wrapper,
the replay - is counted in slatmon_monitor_errors_total, logged once and swallowed; the run stays
bitwise identical to an unwatched one.

Fault injection = monkeypatching one of OUR internal functions to raise (never a torch component)."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import urllib.error
import urllib.request

import pytest
import torch
from torch import nn

import monitor
import monitor.capture
import monitor.stepbook
from monitor.capture import OutputProbe
from monitor.export import server as export_server
from monitor.guard.policy import Guard
from monitor.localize import Localizer
from monitor.ops import sigterm
from monitor.paramwatch import ParamWatch
from monitor.record import read_record
from monitor.record import writer as record_writer
from monitor.sampler import StepSampler
from monitor.scaling import GradScalerTap
from monitor.tracker import Tracker
from tests.monitor.test_identity import hook_counts

from .runs import NAN_STEP, STEPS, assert_identical, setup, train, watched_and_plain

localize_module = importlib.import_module("monitor.localize")  # `monitor.localize` is the replay function


def boom(*args, **kwargs):
    raise RuntimeError("injected fault")


def reload_state(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    opt.load_state_dict(opt.state_dict())  # fires the watcher's load_state_dict post-hook


def raising_grad_hook(self, name, dtype):
    return boom


# name: (object patched, attribute, replacement, watch() options, run options)
FAULTS = {
    "step pre-hook": (StepSampler, "begin", boom, {}, {}),
    "step post-hook": (StepSampler, "_layer_rows", boom, {}, {}),
    "end-of-backward callback": (StepSampler, "capture", boom, {}, {}),
    "end-of-backward re-queue": (OutputProbe, "_queue_end", boom, {}, {}),
    "output forward hook": (monitor.capture, "count_nonfinite", boom, {}, {}),
    "entry forward pre-hook": (monitor.stepbook, "_lrs", boom, {}, {}),
    "GradScaler update wrapper": (GradScalerTap, "_take", boom, {}, {"scaler": True}),
    "guard pre-hook": (Guard, "before_step", boom, {"on_nonfinite": "skip"}, {}),
    "guard post-hook": (Guard, "after_step", boom, {"on_nonfinite": "skip"}, {}),
    "localisation forward hooks": (localize_module, "_stats", boom, {}, {"nan_at": NAN_STEP}),
    "localisation gradient hooks": (Localizer, "_grad_hook", raising_grad_hook, {}, {"nan_at": NAN_STEP}),
    "load_state_dict hook": (monitor.Watcher, "_redescribe", boom, {}, {"between": reload_state}),
    "parameters-changed check": (ParamWatch, "changed", boom, {}, {}),
}


def test_unfaulted_runs_count_no_error():
    """The control: the same runs without a fault are identical and count nothing."""
    for run_options in ({}, {"scaler": True}, {"nan_at": NAN_STEP}, {"between": reload_state}):
        plain, seen, w = watched_and_plain({"on_nonfinite": "warn"}, **run_options)
        assert_identical(plain, seen)
        assert w.counters.errors == 0


@pytest.mark.parametrize("name", FAULTS)
def test_fault_in_a_hook_is_counted_logged_once_and_training_is_identical(name, monkeypatch, caplog):
    target, attr, replacement, watch_options, run_options = FAULTS[name]
    monkeypatch.setattr(target, attr, replacement)
    with caplog.at_level(logging.ERROR, logger="monitor"):
        plain, seen, w = watched_and_plain(watch_options, **run_options)
    assert_identical(plain, seen)
    assert w.counters.errors >= 1, f"{name}: the fault was never hit"
    logged = [r for r in caplog.records if "error inside the monitor" in r.getMessage()]
    assert len(logged) == 1 and "injected fault" in logged[0].getMessage()
    assert w.counters.step == STEPS  # the watcher itself goes on counting


def test_misused_observe_loss_is_counted_not_raised():
    model, opt, _ = setup()
    with monitor.watch(model, opt, port=None, run="safety") as w:
        for bad in (None, "1.0", torch.ones(3), [1.0], True):
            w.observe_loss(bad)
        w.step_skipped(loss=object())
    assert w.counters.errors == 6


def test_failing_close_step_still_removes_everything(monkeypatch):
    model, opt, scaler = setup(scaler=True)
    before = hook_counts(model, opt)
    w = monitor.watch(model, opt, scaler=scaler, port=0, run="safety")
    port = int(w.url.rsplit(":", 1)[1].split("/")[0])
    train(model, opt, 2, scaler=scaler, watcher=w)
    monkeypatch.setattr(Tracker, "close", boom)
    w.close()  # does not raise
    assert w.counters.errors == 1
    assert hook_counts(model, opt) == before and "update" not in vars(scaler)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the endpoint is gone although the tracker's close failed before it
    w.close()
    assert w.counters.errors == 1  # idempotent


def test_record_writer_survives_a_failed_batch(tmp_path, monkeypatch):
    """Our own bug in the batch write (not a lock or a full disk: tests/adversarial/test_record_faults.py):
    the writer thread lives on, writes the batch item by item, and nothing is lost."""
    calls = {"n": 0}
    real_write = record_writer.write_batch

    def fail_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(record_writer, "write_batch", fail_once)
    model, opt, _ = setup()
    with monitor.watch(model, opt, port=None, run="safety", record=tmp_path / "r.sqlite") as w:
        writer = w.tracker._writer
        assert writer.flush()  # the failed batch (the run's meta) is behind us
        train(model, opt, STEPS, watcher=w)
        assert writer.flush() and writer._thread.is_alive()
    assert calls["n"] >= 2 and writer.errors == 0
    assert [s.step for s in read_record(w.record_path).steps] == list(range(1, STEPS + 1))


def test_http_thread_survives_a_failed_scrape(monkeypatch):
    model, opt, _ = setup()
    with monitor.watch(model, opt, port=0, run="safety") as w:
        train(model, opt, 1, watcher=w)
        with monkeypatch.context() as m:
            m.setattr(export_server, "render", boom)  # beyond the per-family guards: the whole body fails
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(w.url, timeout=5)
            assert failed.value.code == 500
        train(model, opt, 1, watcher=w)
        body = urllib.request.urlopen(w.url, timeout=5).read().decode()
    assert 'slatmon_step{run="safety",rank="0"} 2.0' in body
    assert 'slatmon_monitor_errors_total{run="safety",rank="0"} 1.0' in body  # the failed scrape, counted


def test_sigterm_handler_never_raises_and_still_chains(tmp_path):
    """A target path that cannot be removed (a non-empty folder: unlink fails for real) must not turn
    the signal into an exception inside the training loop, and the previous handler still runs."""
    stuck = tmp_path / "stuck.json"
    stuck.mkdir()
    (stuck / "keep").write_text("x")
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        assert sigterm.remove_on_sigterm(stuck)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread, right here
        assert seen == [signal.SIGTERM] and stuck.is_dir()
    finally:
        sigterm.forget(stuck)
        signal.signal(signal.SIGTERM, previous)


def test_trellis_wrapper_fault_is_counted_and_training_identical(monkeypatch):
    from monitor.integrations.trellis import TrellisWatch, watch_trellis
    from tests.integrations.common import assert_bitwise_equal
    from tests.integrations.trellis_standin import StandInTrainer

    plain = StandInTrainer(None, max_steps=4, bad_steps=(2,))
    plain.run()
    monkeypatch.setattr(TrellisWatch, "_observe", boom)
    monkeypatch.setattr(TrellisWatch, "_after_run_step", boom)
    seen = StandInTrainer(None, max_steps=4, bad_steps=(2,))
    with watch_trellis(seen, port=None, run="safety") as w:
        seen.run()
    assert_bitwise_equal(plain.final(), seen.final())
    assert plain.truth.skipped == seen.truth.skipped == [2]
    assert w.counters.errors >= 8  # every micro-batch loss and every run_step


def test_replay_hook_fault_never_reaches_run_batch(monkeypatch):
    model, _, _ = setup()
    x, y = torch.randn(4, 16), torch.randn(4, 1)
    grads = {n: p.grad for n, p in model.named_parameters()}
    monkeypatch.setattr(localize_module, "_stats", boom)
    out = {}

    def run_batch(m: nn.Module) -> torch.Tensor:
        out["loss"] = nn.functional.mse_loss(m(x), y)
        return out["loss"]

    events = monitor.localize(model, run_batch)
    assert events == [] and torch.isfinite(out["loss"])
    assert {n: p.grad for n, p in model.named_parameters()} == grads  # .grad untouched (None)


def test_replay_of_a_graph_already_freed_returns_what_the_hooks_saw(caplog):
    model, _, _ = setup()
    x = torch.randn(4, 16)
    with torch.no_grad():
        model.input_layer.weight[0, 0] = float("inf")  # finite data, a module that makes the first Inf

    def run_batch(m: nn.Module) -> torch.Tensor:
        loss = m(x).sum()
        loss.backward()  # the caller's own backward frees the graph: the replay's own backward fails
        return loss

    with caplog.at_level(logging.WARNING, logger="monitor"):
        events = monitor.localize(model, run_batch)
    assert [(e.layer, e.detail.get("direction")) for e in events] == [("input_layer", "forward")]
    assert any("backward through the graph a second time" in r.getMessage() for r in caplog.records)


def test_scraper_hanging_up_prints_no_traceback_into_the_training_log(capfd):
    """socketserver calls handle_error() from its except clause when a request fails outside do_GET (a
    scraper that reset the connection before the answer): its default prints a traceback to stderr."""
    model, opt, _ = setup()
    with monitor.watch(model, opt, port=0, run="safety") as w:
        train(model, opt, 1, watcher=w)
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            w._server.handle_error(None, ("127.0.0.1", 40000))
        body = urllib.request.urlopen(w.url, timeout=5).read().decode()  # still serving
    assert "slatmon_step" in body
    assert "Traceback" not in capfd.readouterr().err
