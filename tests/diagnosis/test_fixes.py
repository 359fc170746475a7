"""Fix snippets: valid Python, filled in with the user's own numbers."""

from __future__ import annotations

import pytest

from monitor.diagnosis import fixes, run_rules
from monitor.history import History

from .histories import run_info


@pytest.fixture
def setup() -> fixes.Setup:
    return fixes.setup_of(History(run=run_info(lr=3e-4, eps=1e-8, optimizer="AdamW")))


def all_fixes(s: fixes.Setup) -> list:
    return [fixes.master_weights_fix(s), fixes.fused_fix(s), fixes.eps_fix(s), fixes.amsgrad_fix(s),
            fixes.autocast_scaler_fix(s), fixes.manual_loss_scale_fix(s), fixes.bf16_fix(s),
            fixes.module_fp32_fix("blocks.0.attn"), fixes.clip_fix(2.0, True), fixes.clip_fix(0.5, False),
            fixes.lr_fix(s, 1e-5, 3e-4), fixes.warmup_fix(500), fixes.loss_eps_fix("float16")]


def test_every_snippet_compiles(setup: fixes.Setup) -> None:
    for fix in all_fixes(setup):
        compile(fix.snippet, f"<{fix.kind}>", "exec")
        assert fix.summary


def test_snippets_use_the_users_setup(setup: fixes.Setup) -> None:
    assert "torch.optim.AdamW(master, lr=0.0003" in fixes.master_weights_fix(setup).snippet
    assert "eps=0.0001" in fixes.eps_fix(setup).snippet
    assert "torch.amp.GradScaler('cuda')" in fixes.autocast_scaler_fix(setup).snippet
    assert "fused=True" in fixes.fused_fix(setup).snippet


def test_fused_support() -> None:
    assert fixes.supports_fused(fixes.Setup(optimizer="AdamW", device="cpu", torch_version=(2, 13)))
    assert not fixes.supports_fused(fixes.Setup(optimizer="AdamW", device="cpu", torch_version=(2, 3)))
    assert fixes.supports_fused(fixes.Setup(optimizer="Adam", device="cuda", torch_version=(2, 0)))
    assert not fixes.supports_fused(fixes.Setup(optimizer="NAdam", device="cuda"))


def test_fused_cpu_claim_holds_on_this_torch() -> None:
    """The fix says CPU fused AdamW works for float16 parameters from torch 2.4: check it here."""
    import torch

    p = torch.nn.Parameter(torch.ones(8, dtype=torch.float16))
    opt = torch.optim.AdamW([p], lr=1e-4, eps=1e-8, fused=True)
    p.grad = torch.full((8,), 1e-3, dtype=torch.float16)
    opt.step()
    assert torch.isfinite(p).all()


def test_numbers_render_as_python() -> None:
    assert fixes.num(1e-8) == "1e-08" and fixes.num(1.0) == "1.0" and fixes.num((0.9, 0.999)) == "(0.9, 0.999)"
    assert fixes.num(float("inf")) == 'float("inf")'


def test_run_rules_fixes_all_compile() -> None:
    for f in run_rules(History(run=run_info())):
        for fix in f.fixes:
            compile(fix.snippet, "<fix>", "exec")
