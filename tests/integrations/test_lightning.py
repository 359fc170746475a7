"""SlatMonitorCallback on a real Lightning Trainer (CPU, tiny model, a few steps): 32-true, bf16-mixed,
and 16-mixed with a real GradScaler; the truth comes from the LightningModule itself, unwatched."""

from __future__ import annotations

import csv
import math

import lightning.pytorch as pl  # extra "lightning" (scripts/setup.sh installs it)
import pytest
import torch
from torch import nn

import monitor
from monitor.integrations.lightning import SlatMonitorCallback
from monitor.record import read_record

from .common import assert_bitwise_equal, critical, hooks_left

STEPS = 6


class Tiny(pl.LightningModule):
    """Records, without the monitor, each step's loss and the global grad norm at the update."""

    def __init__(self, nan_at: int | None = None, inf_from: int | None = None, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        self.nan_at, self.inf_from, self.fail_at = nan_at, inf_from, fail_at
        self.losses: dict[int, float] = {}
        self.micro_losses: dict[int, list[float]] = {}  # every training_step of an update
        self.grad_norms: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        step = self.global_step + 1  # the monitor numbers iterations from 1
        if step == self.fail_at:
            raise RuntimeError("data error")
        if self.inf_from is not None and step >= self.inf_from:
            x = x.clone()
            x[0, 0] = math.inf
        loss = nn.functional.mse_loss(self.net(x).float(), y)
        if step == self.nan_at:
            loss = loss * math.nan
        self.losses[step] = float(loss.detach())
        self.micro_losses.setdefault(step, []).append(self.losses[step])
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad.detach().double() for p in self.parameters() if p.grad is not None]
        self.grad_norms[self.global_step + 1] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(1)
        n = 10 * 8
        data = torch.utils.data.TensorDataset(torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g))
        return torch.utils.data.DataLoader(data, batch_size=8)


def fit(tmp_path, module: Tiny, callbacks=(), precision="32-true", plugins=None, steps=STEPS):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, precision=None if plugins else precision,
                         plugins=plugins, callbacks=list(callbacks), logger=pl.loggers.CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module)
    return trainer


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_run_bitwise_identical_and_right(tmp_path, precision):
    plain = Tiny()
    fit(tmp_path / "plain", plain, precision=precision)
    seen, cb = Tiny(), SlatMonitorCallback(port=None, run=f"pl-{precision}", record=str(tmp_path / "pl.db"))
    trainer = fit(tmp_path / "seen", seen, [cb], precision=precision)
    assert_bitwise_equal({n: p.detach() for n, p in plain.named_parameters()},
                         {n: p.detach() for n, p in seen.named_parameters()})
    assert plain.losses == seen.losses
    steps = {s.step: s for s in read_record(tmp_path / "pl.db").steps}
    assert sorted(steps) == list(range(1, STEPS + 1))
    for step, loss in seen.losses.items():
        assert math.isclose(steps[step].loss, loss, rel_tol=1e-6)
        assert math.isclose(steps[step].grad_norm_total, seen.grad_norms[step], rel_tol=1e-4)
    assert not [s for s in steps.values() if s.skipped]
    assert steps[1].loss_scale == 1.0
    assert hooks_left([seen], trainer.optimizers) == 0 and cb.watcher is None
    assert isinstance(monitor.diagnose(str(tmp_path / "pl.db")), list)


def test_nan_loss_is_critical_and_logged_through_the_trainer_logger(tmp_path):
    module, cb = Tiny(nan_at=3), SlatMonitorCallback(port=None, record=str(tmp_path / "nan.db"))
    trainer = fit(tmp_path, module, [cb], precision="bf16-mixed")
    steps = {s.step: s for s in read_record(tmp_path / "nan.db").steps}
    assert math.isnan(steps[3].loss) and all(math.isfinite(steps[i].loss) for i in (1, 2))
    found = monitor.diagnose(str(tmp_path / "nan.db"))  # nonfinite_loss (activations finite)
    assert critical(found), [(f.code, f.severity) for f in found]
    with open(f"{trainer.logger.log_dir}/metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = [r for r in rows if r.get("slatmon/findings_critical")]
    assert logged and float(logged[-1]["slatmon/findings_critical"]) == len(critical(found))
    assert hooks_left([module], trainer.optimizers) == 0


class Overflowing(Tiny):
    """16-mixed: records which updates the GradScaler must skip (non-finite unscaled gradients)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.must_skip: list[int] = []

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)
        if not all(torch.isfinite(p.grad).all() for p in self.parameters() if p.grad is not None):
            self.must_skip.append(self.global_step + 1)


def test_16_mixed_gradscaler_skips_are_counted(tmp_path):
    from lightning.pytorch.plugins.precision import MixedPrecision

    def plugin():
        return [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))]

    plain = Overflowing(inf_from=4)
    fit(tmp_path / "plain", plain, plugins=plugin(), steps=10)
    module, cb = Overflowing(inf_from=4), SlatMonitorCallback(port=None)
    trainer = fit(tmp_path / "seen", module, [cb], plugins=plugin(), steps=10)
    scaler = trainer.precision_plugin.scaler
    assert module.must_skip == plain.must_skip and module.must_skip  # the truth, unwatched too
    w = cb.last_watcher
    seen = [s.step for s in w.history().steps if s.skipped]
    assert seen == module.must_skip and w.counters.skipped_steps == len(module.must_skip)
    assert {s.skip_reason for s in w.history().steps if s.skipped} == {"scaler"}
    steps = {s.step: s for s in w.history().steps}  # the loss as training_step returned it, not scaled
    assert all(math.isclose(steps[i].loss, v, rel_tol=1e-6) for i, v in module.losses.items() if math.isfinite(v))
    assert steps[1].loss_scale == 2.0**8
    assert_bitwise_equal({n: p.detach() for n, p in plain.named_parameters()},
                         {n: p.detach() for n, p in module.named_parameters()})
    assert hooks_left([module], trainer.optimizers, scaler) == 0


def test_exception_in_training_removes_every_hook(tmp_path):
    module, cb = Tiny(fail_at=3), SlatMonitorCallback(port=None)
    with pytest.raises(RuntimeError, match="data error"):
        fit(tmp_path, module, [cb])
    assert cb.watcher is None and cb.last_watcher.counters.step == 2
    assert hooks_left([module], [cb.last_watcher.optimizer]) == 0


def test_gradient_accumulation_loss_is_the_mean_of_training_step_losses(tmp_path):
    module, cb = Tiny(), SlatMonitorCallback(port=None)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, accumulate_grad_batches=2, logger=False,
                         callbacks=[cb], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module)
    steps = {s.step: s.loss for s in cb.last_watcher.history().steps}
    assert sorted(steps) == [1, 2, 3] and all(len(v) == 2 for v in module.micro_losses.values())
    for step, losses in module.micro_losses.items():  # not Lightning's loss / accumulate_grad_batches
        assert math.isclose(steps[step], sum(losses) / 2, rel_tol=1e-6)


@pytest.mark.parametrize("kw,match", [({"scaler": None}, "scaler"), ({"optimizer": -1}, "optimizer")])
def test_bad_arguments_are_config_errors(kw, match):
    with pytest.raises(monitor.ConfigError, match=match):
        SlatMonitorCallback(**kw)


class SkipsByItself(Tiny):
    """training_step returns None on `none_at`: Lightning skips that backward (and the update)."""

    def __init__(self, none_at: int, **kw) -> None:
        super().__init__(**kw)
        self.none_at = none_at

    def training_step(self, batch, batch_idx):
        return None if self.global_step + 1 == self.none_at else super().training_step(batch, batch_idx)


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_training_step_returning_none_is_a_skipped_step(tmp_path, precision):
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))] \
        if precision == "16-mixed" \
        else None
    module, cb = SkipsByItself(none_at=3), SlatMonitorCallback(port=None)
    trainer = fit(tmp_path, module, [cb], precision=precision, plugins=plugins)
    steps = sorted(cb.last_watcher.history().steps, key=lambda s: s.step)
    assert [s.step for s in steps] == list(range(1, trainer.global_step + 1))
    assert [s.step for s in steps if s.skipped] == [3] and steps[2].skip_reason == "user"
    assert 3 not in module.losses and all(math.isclose(steps[i - 1].loss, v, rel_tol=1e-6)
                                          for i, v in module.losses.items())


def test_kill_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("SLATMON_DISABLE", "1")
    module, cb = Tiny(), SlatMonitorCallback(port=None)
    trainer = fit(tmp_path, module, [cb])
    assert trainer.global_step == STEPS and cb.last_watcher.findings() == []
    assert hooks_left([module], trainer.optimizers) == 0


def test_guard_refused_where_the_update_is_marked_by_the_callback(tmp_path):
    """Without a GradScaler the step pre-hook fires before backward: the guard cannot act there."""
    module, cb = Tiny(), SlatMonitorCallback(port=None, on_nonfinite="skip")
    with pytest.raises(monitor.ConfigError, match="on_nonfinite"):
        fit(tmp_path, module, [cb])
    assert hooks_left([module], []) == 0 and cb.watcher is None
