"""The guard (`on_nonfinite="skip" | "stop"`): non-finite steps kept out of the weights, exactly.

Ground truth is raw torch without the monitor: weights cloned before the step, or a run that never saw
the bad batch (same seed). TRELLIS #162 is the case a gradient check cannot catch: finite gradients,
fp16 AdamW state, eps 1e-8 rounds to 0 and the update itself writes NaN.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import monitor
from monitor.record import read_record
from tests.models import watched_step

from .conftest import Fp16Blocks, batch
from .guard_runs import bitwise_equal, fp32_run, same_state, weights


def test_trellis162_skip_undoes_every_step_and_max_skips_stops(record_path, watched):
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    initial, initial_opt = weights(model), copy.deepcopy(opt.state_dict())
    # raw torch: one unguarded step on a copy really does write non-finite values
    raw = copy.deepcopy(model)
    raw_opt = torch.optim.AdamW(raw.parameters(), lr=1e-4, eps=1e-8)
    x, y = batch(1)
    nn.functional.mse_loss(raw(x), y).backward()
    assert all(torch.isfinite(p.grad).all() for p in raw.parameters())  # the gradients were finite
    raw_opt.step()
    assert not all(torch.isfinite(p).all() for p in raw.parameters())

    w = watched(model, opt, record=record_path, on_nonfinite="skip", max_skips=2)
    for step in (1, 2):
        watched_step(model, opt, w, step)
        assert bitwise_equal(weights(model), initial), step
        assert len(opt.state) == 0 and opt.state_dict() == initial_opt  # no state: as before step 1
    with pytest.raises(monitor.GuardStop) as stop:
        watched_step(model, opt, w, 3)
    assert stop.value.step == 3 and stop.value.reason == "nonfinite_update"
    assert stop.value.finding == "adam_eps_underflow" and "adam_eps_underflow" in str(stop.value)
    assert "max_skips=2" in str(stop.value)
    assert bitwise_equal(weights(model), initial) and len(opt.state) == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "adam_eps_underflow" in [f.code for f in w.findings()]
    assert w.counters.skipped_steps == 3
    w.close()
    h = read_record(record_path)
    assert [(s.step, s.skipped, s.skip_reason) for s in h.steps] == [(i, True, "nonfinite_update") for i in (1, 2, 3)]
    assert h.steps[0].param_nonfinite > 0  # the rows show the update as computed, before the undo
    assert [(e.step, e.detail["reason"]) for e in h.events if e.kind == "guard_stop"] == [(3, "nonfinite_update")]
    assert "adam_eps_underflow" in [f.code for f in monitor.diagnose(str(record_path))]


def test_update_gone_nonfinite_restores_existing_state_exactly(watched):
    """Healthy steps first (fp16 state exists), then eps drops to 1e-8: the bad step is undone to the
    exact exp_avg, exp_avg_sq and step counters cloned by raw torch before it."""
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)
    w = watched(model, opt, on_nonfinite="skip", every=5)
    for step in (1, 2, 3):
        watched_step(model, opt, w, step)
    assert w.counters.skipped_steps == 0
    before, state_before = weights(model), copy.deepcopy(opt)
    for g in opt.param_groups:
        g["eps"] = 1e-8
    watched_step(model, opt, w, 4)
    assert w.counters.skipped_steps == 1
    assert bitwise_equal(weights(model), before)
    assert same_state(opt, state_before)
    assert all(int(opt.state[p]["step"]) == 3 for p in model.parameters())


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("every", [1, 10])
def test_nan_batch_is_skipped_and_weights_match_a_run_without_it(fused, every, tmp_path):
    """Sampled and unsampled steps, plain and fused AdamW (fused + unsampled: device-side found_inf)."""
    record = tmp_path / "r.sqlite"
    guarded, gopt, w = fp32_run(8, nan_at=[3], fused=fused,
                                watch={"on_nonfinite": "skip", "every": every, "record": str(record)})
    never, nopt, _ = fp32_run(8, drop=[3], fused=fused)
    assert bitwise_equal(weights(guarded), weights(never))
    assert same_state(gopt, nopt)
    assert w.counters.skipped_steps == 1 and w.counters.errors == 0
    skipped = [(s.step, s.skip_reason) for s in read_record(record).steps if s.skipped]
    assert skipped == [(3, "nonfinite_grad")]
    # raw torch with the NaN batch, unguarded: the weights are gone
    poisoned, _, _ = fp32_run(8, nan_at=[3], fused=fused)
    assert not all(torch.isfinite(v).all() for v in weights(poisoned).values())


def test_skipped_step_gives_the_gradients_back(watched):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watched(model, opt, on_nonfinite="skip")
    model(torch.full((2, 4), float("nan"))).sum().backward()
    grads = [p.grad for p in model.parameters()]
    before = weights(model)
    opt.step()
    assert [p.grad for p in model.parameters()] == grads  # the very same tensors, NaN as computed
    assert bitwise_equal(weights(model), before) and w.counters.skipped_steps == 1


def test_stop_raises_before_anything_nonfinite_is_written(record_path, watched):
    seen: list[dict] = []
    after_2, _, _ = fp32_run(2)
    model, opt, _ = fp32_run(2)  # the same two steps, then watched from step 3 on
    w = watched(model, opt, record=record_path, on_nonfinite="stop",
                checkpoint=lambda state: seen.append(copy.deepcopy(state)))
    model(torch.full((4, 16), float("nan"))).sum().backward()
    with pytest.raises(monitor.GuardStop) as stop:
        opt.step()
    assert stop.value.step == 1 and stop.value.reason == "nonfinite_grad"
    assert "gradients were not finite" in str(stop.value) and "Fix:" in str(stop.value)
    assert bitwise_equal(weights(model), weights(after_2))
    assert all(int(s["step"]) == 2 for s in opt.state.values())
    assert len(seen) == 1 and bitwise_equal(seen[0]["model"], weights(after_2))
    assert w.counters.skipped_steps == 1 and w.counters.errors == 0
    # the record is flushed before the exception leaves: readable now, watcher still open
    h = read_record(record_path)
    assert [(s.step, s.skipped, s.skip_reason) for s in h.steps] == [(1, True, "nonfinite_grad")]
    assert [e.detail["reason"] for e in h.events if e.kind == "guard_stop"] == ["nonfinite_grad"]


def test_stop_on_trellis162_leaves_the_initial_weights(watched):
    torch.manual_seed(0)
    model = Fp16Blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    initial = weights(model)
    w = watched(model, opt, on_nonfinite="stop")
    with pytest.raises(monitor.GuardStop, match="adam_eps_underflow") as stop:
        watched_step(model, opt, w, 1)
    assert stop.value.reason == "nonfinite_update" and "initial values" in str(stop.value)
    assert bitwise_equal(weights(model), initial) and len(opt.state) == 0


def test_a_failing_checkpoint_is_named_and_chained(watched):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def checkpoint(state):
        raise OSError("disk full")

    w = watched(model, opt, on_nonfinite="stop", checkpoint=checkpoint)
    model(torch.full((2, 4), float("inf"))).sum().backward()
    with pytest.raises(monitor.GuardStop, match="disk full") as stop:
        opt.step()
    assert isinstance(stop.value.__cause__, OSError) and w.counters.errors == 0


@pytest.mark.parametrize("dtype,eps", [(torch.float32, 1e-8), (torch.float16, 1e-4)])
def test_a_healthy_guarded_run_is_bitwise_identical(watched, dtype, eps):
    """fp32: the gradient check only; fp16: with the undo copy. Neither changes a healthy run."""
    def run(**kw):
        torch.manual_seed(0)
        model = Fp16Blocks(dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
        w = watched(model, opt, **kw) if kw else None
        for step in range(1, 8):
            x, y = batch(step)
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return model, opt, w

    plain, popt, _ = run()
    guarded, gopt, w = run(on_nonfinite="skip", every=3)
    assert bitwise_equal(weights(plain), weights(guarded)) and same_state(popt, gopt)
    assert w.counters.skipped_steps == 0 and w.counters.errors == 0


def test_under_a_grad_scaler_the_scaler_skips_and_the_guard_does_not_count_twice(watched):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    w = watched(model, opt, scaler=scaler, on_nonfinite="skip")
    for step in range(1, 5):
        x = torch.full((2, 4), float("nan")) if step == 2 else torch.randn(2, 4)
        opt.zero_grad(set_to_none=True)
        scaler.scale(model(x).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
    assert w.counters.skipped_steps == 1 and w.counters.errors == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("kwargs,arg", [
    ({"on_nonfinite": "halt"}, "on_nonfinite"),
    ({"on_nonfinite": "skip", "max_skips": 0}, "max_skips"),
    ({"on_nonfinite": "skip", "max_skips": True}, "max_skips"),
    ({"on_nonfinite": "warn", "max_skips": 3}, "max_skips"),
    ({"on_nonfinite": "stop", "checkpoint": "ckpt.pt"}, "checkpoint"),
    ({"on_nonfinite": "warn", "checkpoint": print}, "checkpoint"),
])
def test_bad_guard_arguments_name_the_argument(kwargs, arg):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(monitor.ConfigError, match=arg):
        monitor.watch(model, opt, port=None, **kwargs)
    assert not opt._optimizer_step_pre_hooks  # nothing was hooked


def test_a_step_that_raises_leaves_nothing_lent_out(watched):
    """optimizer.step() raising after the guard's pre-hook (found_inf lent, or gradients hidden): the
    next step starts clean, and close() gives everything back."""
    model = nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    w = watched(model, opt, on_nonfinite="skip", every=100)

    def boom(*args, **kwargs):
        raise RuntimeError("optimizer failed")

    for _ in (1, 2):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    handle = opt.register_step_pre_hook(boom)  # runs after the guard's pre-hook
    opt.zero_grad(set_to_none=True)
    model(torch.full((2, 4), float("nan"))).sum().backward()
    with pytest.raises(RuntimeError, match="optimizer failed"):
        opt.step()
    handle.remove()
    assert float(vars(opt)["found_inf"]) == 1.0  # lent for the step that never ran
    opt.zero_grad(set_to_none=True)
    model(torch.randn(2, 4)).sum().backward()
    before = weights(model)
    opt.step()  # a finite step: the stale found_inf=1 must not skip it
    assert not bitwise_equal(weights(model), before) and "found_inf" not in vars(opt)
    w.close()
    assert "found_inf" not in vars(opt) and "grad_scale" not in vars(opt)


def test_warn_adds_no_hook_and_skip_removes_its_own(watched):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooks = lambda: (len(opt._optimizer_step_pre_hooks), len(opt._optimizer_step_post_hooks))  # noqa: E731
    w = watched(model, opt, on_nonfinite="warn")
    assert hooks() == (1, 1)  # the watcher's own, nothing for the guard
    w.close()
    w = watched(model, opt, on_nonfinite="skip")
    assert hooks() == (2, 2)
    w.close()
    assert hooks() == (0, 0)
