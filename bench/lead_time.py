"""Lead time: how many steps before a loss spike the Adam second-moment-lag warning fires, and when the
loss-spike rule fires, on planted spike scenarios (a watched MLP on the CPU, every step sampled).

    python -m bench.lead_time [--seeds 5] [--steps 400] [--change 300]

Scenarios (the change happens at step `--change`; AdamW, betas (0.9, 0.999)):
- input-wakes: 16 of 32 inputs are 0 until the change, then 4x (x10 in its own row) the others' scale;
  their first-layer weights start at 0, so the loss does not move at the change itself. Their gradients
  jump from 0 while exp_avg_sq is 0: the paper's setting (a sudden gradient increase after a period of
  small gradients).
- grad-scale: the loss is weighted 100x from the change (a loss-weight schedule); the observed loss is
  the unweighted one, so it cannot move before the update does.
- grad-ramp: the loss weight grows 1.5x per step from the change, up to 100x.
- lr-jump: the lr is multiplied by 100 at the change: a spike that is not a second-moment lag.
- clean: nothing changes (false positives).
And input-wakes and grad-scale again with the fixes of adam_second_moment_lag applied (their snippets
executed as they say): beta2 0.95 (fix 1), StableAdamW-style update clipping (fix 2).

Per run: the step of the warning (adam_second_moment_lag's first_step), of the spike rule (loss_spike's
first_step), the peak loss after the change (as a multiple of the median of the 128 steps before it),
the largest per-layer RMS(g^2 / v_hat) before the change (healthy noise). Lead = spike-rule step -
warning step.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import monitor
from monitor.example.apply_fix import FixRunner
from monitor.findings import Finding, Fix

__all__ = ["SCENARIOS", "Outcome", "apply_fix", "iterate", "main", "run"]

INPUTS, NEW = 16, 16  # inputs always on; inputs that wake up (input-wakes)
LR = {"input-wakes": 3e-3, "grad-scale": 1e-2, "grad-ramp": 1e-2, "lr-jump": 1e-3, "clean": 3e-3}
SCENARIOS = tuple(LR)
WAKE_SCALE, GRAD_SCALE, LR_JUMP, RAMP = 4.0, 100.0, 100.0, 1.5
BAD_TARGETS = 30.0  # a corrupted batch's targets (bad_batch=): a loss ~1000x its level on that step only


@dataclass(frozen=True)
class Outcome:
    scenario: str
    seed: int
    change: int
    lag: int | None  # adam_second_moment_lag first_step
    spike: int | None  # loss_spike first_step
    peak: float  # largest loss after the change / median of the 128 losses before it
    peak_step: int
    max_rms: float  # largest adam_rms_ratio seen before the change (healthy noise)
    losses: tuple[float, ...]
    findings: tuple[Finding, ...] = ()  # the watcher's findings at the end of the run

    @property
    def lead(self) -> int | None:
        return None if self.lag is None or self.spike is None else self.spike - self.lag


def model_for(scenario: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(INPUTS + NEW, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
    if scenario == "input-wakes":
        with torch.no_grad():
            model[0].weight[:, INPUTS:] = 0  # a zero-initialised new input branch
    return model


def apply_fix(fix: Fix, model: nn.Module, optimizer: torch.optim.Optimizer) -> FixRunner:
    """`fix` applied as its snippet is written (the snippet contract): its setup runs now, against `model`
    and `optimizer`; the runner's `optimizer` is the one to train with, and, when the fix replaces the
    iteration, `runner.iteration(batch, compute_loss)` is one training iteration."""
    return FixRunner(fix, model, optimizer, None)


def iterate(runner: FixRunner | None, optimizer: torch.optim.Optimizer, model: nn.Module, batch: object,
            compute_loss: Callable[[nn.Module, object], torch.Tensor]) -> None:
    """One training iteration: the fix's own when it replaces the loop's, else forward, backward, step."""
    if runner is not None and runner.replaces_iteration:
        runner.iteration(batch, compute_loss)
        return
    optimizer.zero_grad(set_to_none=True)
    compute_loss(model, batch).backward()
    optimizer.step()


def run(scenario: str, seed: int = 0, steps: int = 400, change: int = 300, fix: Fix | None = None,
        record: str | None = None, scale: float | None = None, bad_batch: int | None = None,
        bad_targets: float = BAD_TARGETS) -> Outcome:
    """One watched run of `scenario` (AdamW, or the optimizer `fix`'s snippet builds); `scale`: the
    scenario's factor (wake-up input scale, loss weight, lr factor) instead of its default; `bad_batch`:
    a step whose targets are multiplied by `bad_targets` (a planted one-step spike)."""
    model = model_for(scenario, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR[scenario], weight_decay=0.0)
    runner = None if fix is None else apply_fix(fix, model, opt)
    opt = opt if runner is None else runner.optimizer
    gen = torch.Generator().manual_seed(seed + 1)
    teacher = torch.randn(INPUTS, generator=gen)
    losses: list[float] = []
    seen: list[torch.Tensor] = []
    with monitor.watch(model, opt, port=None, run=f"{scenario}-{seed}", record=record) as w:
        for step in range(1, steps + 1):
            x = torch.randn(64, INPUTS + NEW, generator=gen)
            y = torch.sin(x[:, :INPUTS] @ teacher / 4).unsqueeze(1) + 0.1 * torch.randn(64, 1, generator=gen)
            y *= bad_targets if step == bad_batch else 1.0
            x[:, INPUTS:] *= (scale or WAKE_SCALE) if scenario == "input-wakes" and step >= change else 0.0
            if scenario == "lr-jump" and step == change:
                for group in opt.param_groups:
                    group["lr"] *= scale or LR_JUMP
            weight = (scale or GRAD_SCALE) if scenario == "grad-scale" and step >= change else 1.0
            if scenario == "grad-ramp" and step >= change:
                weight = min(scale or GRAD_SCALE, RAMP ** (step - change + 1))

            def compute_loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor], weight: float = weight
                             ) -> torch.Tensor:
                loss = nn.functional.mse_loss(m(b[0]), b[1])
                w.observe_loss(loss)
                seen.append(loss.detach())
                return loss * weight

            iterate(runner, opt, model, (x, y), compute_loss)
            losses.append(float(seen[-1]))
    return _outcome(scenario, seed, change, w, losses)


def _outcome(scenario: str, seed: int, change: int, w: monitor.Watcher, losses: list[float]) -> Outcome:
    found = w.findings()
    first = {f.code: f.first_step for f in found}
    base = statistics.median(losses[max(0, change - 129):change - 1])
    after = losses[change - 1:]
    peak_i = max(range(len(after)), key=after.__getitem__)
    rms = [r.adam_rms_ratio for r in w.history().layers if r.step < change and r.adam_rms_ratio is not None]
    return Outcome(scenario, seed, change, first.get("adam_second_moment_lag"), first.get("loss_spike"),
                   after[peak_i] / base, change + peak_i, max(rms, default=0.0), tuple(losses), tuple(found))


def _fmt(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def table(outcomes: list[Outcome]) -> str:
    rows = ["| scenario | warning fired | spike rule fired | lead (spike - warning), min / median / max | "
            "warning - change | spike - change | peak loss (x median) | largest RMS before the change |",
            "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(o.scenario for o in outcomes):
        group = [o for o in outcomes if o.scenario == name]
        n = len(group)
        rows.append(
            f"| {name} | {sum(o.lag is not None for o in group)}/{n} | {sum(o.spike is not None for o in group)}/{n} | "
            f"{_fmt([o.lead for o in group if o.lead is not None])} | "
            f"{_fmt([o.lag - o.change for o in group if o.lag is not None])} | "
            f"{_fmt([o.spike - o.change for o in group if o.spike is not None])} | "
            f"{statistics.median(o.peak for o in group):.1f} | {max(o.max_rms for o in group):.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> list[Outcome]:
    p = argparse.ArgumentParser(prog="python -m bench.lead_time", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--change", type=int, default=300)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from monitor.diagnosis import stability_fixes
    from monitor.diagnosis.fixes import Setup

    def fix(n: int, scenario: str) -> Fix:
        setup = Setup(optimizer="AdamW", lr=LR[scenario], param_dtype="float32", device="cpu")
        return (stability_fixes.beta2_fix, stability_fixes.update_clipping_fix)[n - 1](setup)

    rows: list[tuple[str, str, float | None, Fix | None]] = [
        *((name, name, None, None) for name in SCENARIOS),
        (f"input-wakes x{GRAD_SCALE / 10:g}", "input-wakes", GRAD_SCALE / 10, None),
        *((f"{name} + {label} (fix {n})", name, None, fix(n, name))
          for name in ("input-wakes", "grad-scale") for n, label in ((1, "beta2 0.95"), (2, "update clipping")))]
    outcomes = []
    for seed in range(a.seeds):
        for label, scenario, scale, with_fix in rows:
            o = run(scenario, seed, a.steps, a.change, fix=with_fix, scale=scale)
            outcomes.append(dataclasses.replace(o, scenario=label))
    print(f"{a.seeds} seeds, {a.steps} steps, change at step {a.change}\n\n{table(outcomes)}")
    return outcomes


if __name__ == "__main__":
    main()
