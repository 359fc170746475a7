"""SlatMonitorCallback on a real Hugging Face Trainer (CPU, a small nn.Module returning its loss): the
truth comes from the model itself and from the Trainer's own log (its pre-clip grad_norm), unwatched."""

from __future__ import annotations

import math

import pytest
import torch
import transformers  # extra "huggingface" (scripts/setup.sh installs it)
from torch import nn

import monitor
from monitor.integrations.huggingface import SlatMonitorCallback
from monitor.record import read_record

from .common import assert_bitwise_equal, critical, hooks_left

STEPS = 6


class Regressor(nn.Module):
    """forward(x, labels) -> {"loss": ...}, as HF models do; records its training losses (truth)."""

    def __init__(self, nan_at: int | None = None, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        self.nan_at, self.fail_at = nan_at, fail_at
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(self.losses) + 1 == self.fail_at:
            raise RuntimeError("data error")
        loss = nn.functional.mse_loss(self.net(x).float(), labels)
        if len(self.losses) + 1 == self.nan_at:
            loss = loss * math.nan
        if self.training:
            self.losses.append(float(loss.detach()))
        return {"loss": loss}


class AppliedNorm(transformers.TrainerCallback):
    """Truth: the global norm of the gradients the optimizer receives (after the Trainer's clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        g = [p.grad.detach().double() for p in model.parameters() if p.grad is not None]
        self.norms.append(math.sqrt(sum(float(x.pow(2).sum()) for x in g)))


class LogsSeen(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def dataset(n: int = 8 * STEPS) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def train(tmp_path, model: nn.Module, callbacks=(), scaler=None, **args):
    """A real Trainer on the CPU. `scaler`: a GradScaler handed to the accelerator before train() - on the
    CPU accelerate makes none for fp16=True; everything after (accelerate's backward, its optimizer
    wrapper's scaler.step/update and skip detection) is accelerate's own code."""
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=8, learning_rate=1e-2,
        max_grad_norm=0.5, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0, **args)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset(), callbacks=list(callbacks))
    if scaler is not None:
        trainer.accelerator.scaler = scaler
    trainer.train()
    return trainer


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_hf_run_bitwise_identical_and_right(tmp_path, optim):
    plain = Regressor()
    train(tmp_path / "plain", plain, optim=optim)
    seen, truth = Regressor(), AppliedNorm()
    cb = SlatMonitorCallback(port=None, run=f"hf-{optim}", record=str(tmp_path / "hf.db"))
    trainer = train(tmp_path / "seen", seen, [truth, cb], optim=optim)
    assert_bitwise_equal(dict(plain.named_parameters()), dict(seen.named_parameters()))
    assert plain.losses == seen.losses and len(seen.losses) == STEPS
    logged = [r["grad_norm"] for r in trainer.state.log_history if "grad_norm" in r]  # before clipping
    steps = {s.step: s for s in read_record(tmp_path / "hf.db").steps}
    assert sorted(steps) == list(range(1, STEPS + 1)) and not any(s.skipped for s in steps.values())
    for i, s in enumerate(sorted(steps.values(), key=lambda s: s.step)):
        assert math.isclose(s.loss, seen.losses[i], rel_tol=1e-6)
        assert math.isclose(s.grad_norm_total, logged[i], rel_tol=1e-4)
        assert math.isclose(s.grad_norm_applied, truth.norms[i], rel_tol=1e-4)
    assert any(n > 0.5 * 1.01 for n in logged)  # clipping really happened
    assert hooks_left([seen], [trainer.optimizer.optimizer]) == 0 and cb.watcher is None
    assert isinstance(monitor.diagnose(str(tmp_path / "hf.db")), list)


class SkipsSeen(transformers.TrainerCallback):
    """accelerate's own account of which updates the GradScaler skipped. Under a fused optimizer it
    misses them (GradScaler calls the fused step, whose kernel skips on found_inf), so the Trainer
    even steps its LR schedule: this is not the truth, only compared where it holds."""

    def __init__(self) -> None:
        self.skipped: list[int] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer.step_was_skipped:
            self.skipped.append(state.global_step + 1)


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_fp16_gradscaler_skip_counted_and_identical(tmp_path, optim):
    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0**8)

    plain = Regressor(nan_at=3)
    train(tmp_path / "plain", plain, scaler=scaler(), fp16=True, optim=optim)
    model, accelerate_says, cb = Regressor(nan_at=3), SkipsSeen(), SlatMonitorCallback(port=None)
    trainer = train(tmp_path / "seen", model, [accelerate_says, cb], scaler=scaler(), fp16=True, optim=optim)
    # truth: a GradScaler skips exactly the updates whose gradients are non-finite (the Trainer's own
    # pre-clip grad_norm, from torch's clip_grad_norm_)
    truth = [i + 1 for i, r in enumerate(r for r in trainer.state.log_history if "grad_norm" in r)
             if not math.isfinite(r["grad_norm"])]
    assert truth == [3]
    if optim == "adamw_torch":
        assert accelerate_says.skipped == truth
    steps = sorted(cb.last_watcher.history().steps, key=lambda s: s.step)
    assert [s.step for s in steps if s.skipped] == truth and steps[2].skip_reason == "scaler"
    assert [s.loss_scale for s in steps] == [256.0, 256.0, 128.0, 128.0, 128.0, 128.0]
    assert all(math.isfinite(s.loss) for s in steps if not s.skipped)
    assert_bitwise_equal(dict(plain.named_parameters()), dict(model.named_parameters()))
    assert hooks_left([model], [trainer.optimizer.optimizer], trainer.accelerator.scaler) == 0


def test_nan_loss_is_counted_although_the_trainer_log_hides_it(tmp_path):
    model, cb = Regressor(nan_at=3), SlatMonitorCallback(port=None, record=str(tmp_path / "nan.db"))
    after = LogsSeen()
    trainer = train(tmp_path, model, [cb, after])
    bad = sum(not math.isfinite(v) for v in model.losses)  # NaN from step 3 on: the update made the weights NaN
    assert bad == STEPS - 2 and cb.nonfinite_losses == bad
    logged_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert all(math.isfinite(v) for v in logged_losses)  # the Trainer's own log hides them (nan_inf_filter)
    assert [r["slatmon_nonfinite_losses"] for r in after.logs if "loss" in r] == [0, 0, 1, 2, 3, 4]
    steps = {s.step: s for s in read_record(tmp_path / "nan.db").steps}
    assert math.isnan(steps[3].loss) and math.isfinite(steps[2].loss)


def test_nan_loss_is_critical(tmp_path):
    """Loss, gradients and weights NaN from step 3 (the model's output holds the NaN loss, so the
    activations are not finite and nonfinite_loss does not apply): the catch-all nonfinite_values."""
    train(tmp_path, Regressor(nan_at=3), [SlatMonitorCallback(port=None, record=str(tmp_path / "nan.db"))])
    found = monitor.diagnose(str(tmp_path / "nan.db"))
    assert critical(found), [(f.code, f.severity) for f in found]


def test_exception_in_training_removes_every_hook(tmp_path):
    model = Regressor(fail_at=3)
    with pytest.raises(RuntimeError, match="data error"), SlatMonitorCallback(port=None) as cb:
        train(tmp_path, model, [cb])
    assert cb.watcher is None and cb.last_watcher.counters.step == 2
    assert hooks_left([model], [cb.last_watcher.optimizer]) == 0


def test_gradient_accumulation_loss_is_the_mean_of_micro_batch_losses(tmp_path):
    model, cb = Regressor(), SlatMonitorCallback(port=None)
    train(tmp_path, model, [cb], gradient_accumulation_steps=2)
    steps = sorted(cb.last_watcher.history().steps, key=lambda s: s.step)
    assert len(steps) == len(model.losses) // 2
    for i, s in enumerate(steps):
        assert math.isclose(s.loss, (model.losses[2 * i] + model.losses[2 * i + 1]) / 2, rel_tol=1e-6)


def test_scaling_arguments_are_refused():
    with pytest.raises(monitor.ConfigError, match="loss_scale"):
        SlatMonitorCallback(loss_scale=lambda: 1.0)
