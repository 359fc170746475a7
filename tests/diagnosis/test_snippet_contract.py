"""The snippet contract (monitor/diagnosis/snippets.py, docs/diagnosis.md): every fix builder's snippet
runs as written in a minimal loop that follows the contract (setup once; the iteration section, or the
plain loop, per step), on a small float16-block model; values come from the run's latest state;
TRELLIS set-ups get TRELLIS's config terms. The trainer-level proof is tests/diagnosis/test_fixes_work.py."""

from __future__ import annotations

import ast
import math
from typing import Any

import pytest
import torch
from torch import nn

from monitor.diagnosis import fixes, nonfinite_input, run_rules, stability_fixes
from monitor.diagnosis.report import headline
from monitor.diagnosis.snippets import CONTRACT_NAMES, ITERATION_HEADER, sections
from monitor.findings import FIX_WHERE, Fix
from monitor.history import History, StepObs
from tests.models import Fp16Blocks, batch

from .histories import FP16_BLOCKS, healthy, replace_step, run_info

CPU = fixes.Setup(optimizer="AdamW", lr=1e-3, eps=1e-8, device="cpu", torch_version=(2, 13), loss=1.0)


def builders(s: fixes.Setup) -> list[Fix]:
    return [fixes.master_weights_fix(s), fixes.fused_fix(s), fixes.eps_fix(s), fixes.amsgrad_fix(s),
            fixes.autocast_scaler_fix(s), fixes.manual_loss_scale_fix(s), fixes.bf16_fix(s),
            fixes.module_fp32_fix("blocks.0"), fixes.clip_fix(0.5, False), fixes.lr_fix(s, 1e-4),
            fixes.warmup_fix(10), fixes.loss_eps_fix("float32"),
            # the second-round signatures' and the bad-data fix (torchao's stochastic rounding is not installed here)
            stability_fixes.rounding_master_fix(s), stability_fixes.raise_lr_fix(s, 1e-3, "why"),
            stability_fixes.beta2_fix(s), stability_fixes.update_clipping_fix(s), nonfinite_input.DATA_FIX]


def compute_loss(model: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(b[0]).float(), b[1])


def train_with(fix: Fix, steps: int = 3) -> tuple[nn.Module, dict[str, Any]]:
    """A contract-following loop: setup once, then per step the iteration section or the plain loop."""
    torch.manual_seed(0)
    model = Fp16Blocks()
    ns: dict[str, Any] = {"torch": torch, "model": model, "scaler": None,
                          "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4)}
    parts = sections(fix)
    exec(parts.setup + "\n" + parts.loss, ns)
    for step in range(steps):
        ns.update(batch=batch(step), compute_loss=compute_loss)
        if parts.iteration:
            exec(parts.iteration, ns)
        else:
            ns["optimizer"].zero_grad(set_to_none=True)
            compute_loss(model, ns["batch"]).backward()
            ns["optimizer"].step()
    return model, ns


@pytest.mark.parametrize("fix", builders(CPU), ids=lambda f: f"{f.kind}-{f.where}-{f.summary[:20]}")
def test_every_builder_runs_as_written(fix: Fix) -> None:
    before = [p.detach().float().clone() for p in Fp16Blocks().parameters()]
    model, ns = train_with(fix)
    after = [p.detach().float() for p in model.parameters()]
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "nothing trained"
    if fix.where == "loss":
        t = torch.zeros(3, requires_grad=True)
        (t * ns["safe_log"](t)).sum().backward()  # 0 * log(0): NaN with torch.log
        assert torch.isfinite(t.grad).all() and math.isfinite(float(ns["safe_exp"](torch.tensor(1e4))))


def test_snippets_name_only_the_contract_and_what_they_define() -> None:
    allowed_builtins = {"zip", "min", "max", "all", "any", "next", "bool", "float", "isinstance", "range", "type",
                        "dict"}
    for fix in builders(CPU):
        tree = ast.parse(fix.snippet)
        defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        defined |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
                    for a in [*n.args, *filter(None, [n.vararg, n.kwarg])]}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert used <= CONTRACT_NAMES | defined | allowed_builtins, (fix.kind, used - CONTRACT_NAMES - defined)
        assert fix.where in FIX_WHERE and (ITERATION_HEADER in fix.snippet) == (fix.where == "setup+iteration")


def test_summaries_lead_with_what_to_do_and_say_when_they_only_mitigate() -> None:
    for fix in builders(CPU):
        assert fix.mitigates == fix.summary.startswith("Only mitigates"), fix.summary
        assert len(headline(fix.summary)) <= 110, headline(fix.summary)  # one line in the short report


def test_fixes_use_the_latest_lr_and_eps_not_attach_time() -> None:
    h = healthy(run_info(FP16_BLOCKS, lr=1e-4, eps=1e-8))
    for s in h.steps[-5:]:
        replace_step(h, s.step, lr=(0.1,), eps=(1e-6,))
    s = fixes.setup_of(h)
    assert (s.lr, s.eps) == (0.1, 1e-6)
    assert "(now 0.1)" in fixes.lr_fix(s, 1e-3).summary and "eps=1e-06" in fixes.master_weights_fix(s).snippet


def test_loss_scale_starts_from_the_latest_loss() -> None:
    h = healthy(run_info(FP16_BLOCKS))
    assert fixes.setup_of(h).start_log_scale() == 20 + round(-math.log2(h.steps[-1].loss))
    h = healthy(run_info(FP16_BLOCKS))
    h.steps.append(StepObs(step=31, loss=2.0**-24))  # the loss fell 2**24: so did the gradients
    s = fixes.setup_of(h)
    assert s.start_log_scale() == 44.0 and "log_scale = 44.0" in fixes.manual_loss_scale_fix(s).snippet
    assert "init_scale=2.0**40.0" in fixes.autocast_scaler_fix(s).snippet  # GradScaler's usual 2**16, x 2**24


def test_trellis_setups_get_trellis_terms() -> None:
    known = History(run=run_info(FP16_BLOCKS, eps=1e-8, trainer="trellis"))  # watch_trellis, fp16_mode None
    top = run_rules(known)[0]
    assert top.code == "adam_eps_underflow" and '"fp16_mode": "inflat_all"' in top.fixes[0].summary
    assert '"eps": 0.0001' in next(f for f in top.fixes if f.kind == "eps").summary
    shaped = fixes.setup_of(History(run=run_info(FP16_BLOCKS, scaler="custom", in_optimizer=False)))
    assert shaped.trellis == "inflat_all" and "fp16_scale_growth" in fixes.manual_loss_scale_fix(shaped).summary
    plain = fixes.setup_of(History(run=run_info(FP16_BLOCKS)))
    assert plain.trellis == "" and "TRELLIS" not in fixes.master_weights_fix(plain).summary


def test_watch_trellis_marks_the_run() -> None:
    from monitor.integrations.trellis import watch_trellis
    from tests.integrations.trellis_standin import StandInTrainer

    with watch_trellis(StandInTrainer("inflat_all"), port=None) as w:
        assert w.info.trainer == "trellis"
