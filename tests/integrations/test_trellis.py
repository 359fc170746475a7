"""watch_trellis() on a stand-in of TRELLIS's BasicTrainer (tests/integrations/trellis_standin.py):
every skip of every fp16_mode counted at its own step, the right findings, the loss TRELLIS logs,
bitwise-identical training, and the trainer exactly as it was after close() - also on an exception."""

from __future__ import annotations

import json
import math

import pytest

import monitor
from monitor.integrations.trellis import watch_trellis
from monitor.record import read_record

from .common import assert_bitwise_equal, critical, hooks_left
from .trellis_standin import StandInTrainer

PERSISTENT = tuple(range(5, 17))  # every iteration from 5 to 16 overflows: backing off cannot help
MODES = ("inflat_all", "amp", None)


def trained(mode, watched: bool, **kw):
    trainer = StandInTrainer(mode, **kw)
    w = None
    if watched:
        with watch_trellis(trainer, port=None, run=f"trellis-{mode}") as w:
            trainer.run()
    else:
        trainer.run()
    return trainer, w


def skipped_seen(w) -> list[int]:
    return [s.step for s in w.history().steps if s.skipped]


@pytest.mark.parametrize("mode", MODES)
def test_watched_trellis_training_is_bitwise_identical(mode):
    plain, _ = trained(mode, False, max_steps=10, bad_steps=(4,), batch_split=2)
    seen, w = trained(mode, True, max_steps=10, bad_steps=(4,), batch_split=2)
    assert plain.truth.skipped == seen.truth.skipped == [4]
    assert_bitwise_equal(plain.final(), seen.final())
    assert w.counters.errors == 0


@pytest.mark.parametrize("mode,reason", [("inflat_all", "loss_scale"), ("amp", "scaler")])
def test_persistent_overflow_every_skip_counted_and_collapse_critical(mode, reason):
    trainer, w = trained(mode, True, max_steps=20, bad_steps=PERSISTENT, batch_split=2)
    assert trainer.truth.skipped == list(PERSISTENT)  # the loop's own account
    assert skipped_seen(w) == trainer.truth.skipped and w.counters.skipped_steps == len(PERSISTENT)
    assert {s.skip_reason for s in w.history().steps if s.skipped} == {reason}
    found = {f.code: f for f in w.findings()}
    assert found["loss_scale_collapse"].severity == "critical"
    assert found["loss_scale_collapse"].first_step == PERSISTENT[0]
    assert w.counters.step == 20 and w.counters.errors == 0


def test_inflat_all_scale_is_two_to_the_log_scale():
    trainer, w = trained("inflat_all", True, max_steps=6, bad_steps=(3,), grad_clip=1.0)
    steps = {s.step: s for s in w.history().steps}
    assert steps[3].skipped  # two clean steps (+1e-3 each), then one halving
    assert math.isclose(steps[3].loss_scale, 2.0 ** (12.0 + 1e-3 + 1e-3 - 1), rel_tol=1e-12)
    # a clean step: the scale its gradients carried, before that step's own growth
    assert math.isclose(steps[6].loss_scale, 2.0 ** (trainer.log_scale - 1e-3), rel_tol=1e-12)


def test_mode_none_skip_without_scale_is_counted():
    """fp16_mode=None: TRELLIS prints a warning and skips; no scaler, no scale to fall."""
    trainer, w = trained(None, True, max_steps=8, bad_steps=(3, 6))
    assert trainer.truth.skipped == [3, 6] == skipped_seen(w)
    assert {s.skip_reason for s in w.history().steps if s.skipped} == {"user"}
    assert w.counters.step == 8


def test_mode_none_skip_without_scale_is_a_warning_not_healthy():
    """The loop kept the NaN out of the weights: never "healthy", but not critical either; the inf in the
    batch is named as the data's, not the model's."""
    _, w = trained(None, True, max_steps=8, bad_steps=(3, 6))
    found = {f.code: f for f in w.findings()}
    assert not critical(w.findings())
    assert found["nonfinite_input"].severity == "warning" and found["nonfinite_input"].first_step == 3


def test_loss_is_the_mean_over_micro_batches_as_trellis_logs_it():
    trainer, w = trained("inflat_all", True, max_steps=6, bad_steps=(4,), batch_split=2)
    seen = {s.step: s.loss for s in w.history().steps}
    assert seen.keys() == trainer.truth.loss.keys()
    for step, loss in trainer.truth.loss.items():
        assert math.isnan(loss) == math.isnan(seen[step])
        assert math.isnan(loss) or math.isclose(seen[step], loss, rel_tol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_close_restores_the_trainer_and_removes_every_hook(mode):
    trainer = StandInTrainer(mode, max_steps=3)
    before = dict(vars(trainer))
    with watch_trellis(trainer, port=None) as w:
        assert {"run_step", "training_losses"} <= vars(trainer).keys()
        trainer.run()
    assert vars(trainer).keys() == before.keys()
    assert "run_step" not in vars(trainer) and "training_losses" not in vars(trainer)
    assert hooks_left(list(trainer.models.values()), [trainer.optimizer], getattr(trainer, "scaler", None)) == 0
    assert w.counters.step == 3


def test_an_exception_in_training_closes_cleanly():
    trainer = StandInTrainer("amp", max_steps=6)
    original = trainer.training_losses

    def failing(**mb):
        if trainer.step == 3:
            raise RuntimeError("data error")
        return original(**mb)

    trainer.training_losses = failing
    with pytest.raises(RuntimeError, match="data error"), watch_trellis(trainer, port=None) as w:
        trainer.run()
    assert vars(trainer)["training_losses"] is failing and "run_step" not in vars(trainer)
    assert hooks_left(list(trainer.models.values()), [trainer.optimizer], trainer.scaler) == 0
    assert w.counters.step == 3


def test_record_is_read_by_diagnose(tmp_path):
    trainer = StandInTrainer("inflat_all", max_steps=20, bad_steps=PERSISTENT)
    with watch_trellis(trainer, port=None, record=str(tmp_path / "trellis.db")):
        trainer.run()
    found = {f.code: f.severity for f in monitor.diagnose(str(tmp_path / "trellis.db"))}
    assert found.get("loss_scale_collapse") == "critical"


@pytest.mark.parametrize("change,match", [
    (lambda t: setattr(t, "fp16_mode", "fp8"), "fp16_mode"),
    (lambda t: setattr(t, "models", [1]), "trainer.models"),
    (lambda t: delattr(t, "log_scale"), "log_scale"),
])
def test_bad_trainer_is_a_config_error(change, match):
    trainer = StandInTrainer("inflat_all", max_steps=1)
    change(trainer)
    with pytest.raises(monitor.ConfigError, match=match):
        watch_trellis(trainer, port=None)
    assert "run_step" not in vars(trainer)


def test_scaling_arguments_are_refused():
    with pytest.raises(monitor.ConfigError, match="scaler"):
        watch_trellis(StandInTrainer("amp", max_steps=1), port=None, scaler=None)


def test_kill_switch_patches_nothing(monkeypatch):
    monkeypatch.setenv("SLATMON_DISABLE", "1")
    trainer = StandInTrainer(None, max_steps=3, bad_steps=(2,))
    with watch_trellis(trainer, port=None) as w:
        assert "run_step" not in vars(trainer) and "training_losses" not in vars(trainer)
        trainer.run()
    assert w.findings() == [] and trainer.truth.skipped == [2]


@pytest.mark.parametrize("mode", ["inflat_all", "none"])
def test_torchrun_two_ranks_one_record_each_every_skip_counted(tmp_path, mode):
    """Real torchrun, 2 ranks, DDP over gloo: an inf in rank 1's batch reaches rank 0 through the
    all-reduce, so both skip; each rank writes its own record with its own rank."""
    from tests.trainer_example.torchrun import job

    job("-m", "tests.integrations.trellis_ddp", str(tmp_path), mode, cwd=tmp_path)
    for rank in (0, 1):
        truth = json.loads((tmp_path / f"truth-{rank}.json").read_text())
        assert truth["skipped"] == [3, 4] and truth["rank"] == rank and truth["errors"] == 0
        history = read_record(tmp_path / f"trellis-{rank}.sqlite")
        assert history.run.rank == rank
        assert [s.step for s in history.steps if s.skipped] == truth["skipped"]
        assert len(history.steps) == 8
