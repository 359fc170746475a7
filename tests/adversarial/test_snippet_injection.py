"""Issue #9, class 3 (fixes slice): a crafted run record or model cannot make a fix snippet run anything.

Names from the record or the model (device, module paths, optimizer class, dtype, param group values)
carry `__import__('os').system(...)` behind quotes and newlines. Every snippet the diagnosis then offers
must parse, name nothing outside the snippet contract and what it defines itself, touch no dunder
attribute, and run no command when executed (a marker file the payload would create stays absent).
Stored fixes in a record (pre-flight findings no rule re-derives) lose their code.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import monitor
from monitor.diagnosis import fixes, run_rules
from monitor.diagnosis.snippets import CONTRACT_NAMES, sections
from monitor.findings import Finding, Fix
from monitor.history import Event, GroupInfo, History, LayerInfo, RunInfo
from tests.diagnosis.histories import healthy, replace_rows, replace_step
from tests.models import Fp16Blocks, batch, watched_run

BUILTINS = {"zip", "min", "max", "all", "any", "next", "bool", "float", "isinstance", "range", "type"}


def payloads(marker: Path) -> list[str]:
    cmd = f"__import__('os').system('touch {marker}')"
    return [f"blocks.0'); {cmd} #", f'blocks.1"); {cmd} #', f"blocks.2\n{cmd}\n#", cmd, f"x\\'); {cmd} #"]


def crafted_run(marker: Path, scaler: str = "none") -> RunInfo:
    evil = payloads(marker)
    layers = {name: LayerInfo(dtype="float16", numel=100, group=0) for name in evil}
    layers["out_layer"] = LayerInfo(dtype="float32", numel=10, group=0)
    group = GroupInfo(lr=1e-4, eps=1e-8, betas=(evil[0], 0.999), weight_decay=0.0)  # type: ignore[arg-type]
    return RunInfo(run=evil[2], device=f"cuda'); {evil[3]} #", optimizer=f"AdamW'); {evil[3]} #", groups=(group,),
                   scaler=scaler, layers=layers, torch_version=evil[1], autocast="float16")


def crafted_histories(marker: Path) -> list[History]:
    """Histories whose rules offer every kind of fix, all with crafted names."""
    evil = payloads(marker)
    out = [History(run=crafted_run(marker))]  # pre-flight: eps rounds to 0 in float16 state, no scaling
    overflow = healthy(crafted_run(marker), steps=8)
    overflow.events.append(Event(6, "localized", evil[0], detail={"direction": "forward", "dtype": "float16",
                                                                   "in_absmax": 3.0, "out_absmax": float("inf")}))
    replace_rows(overflow, 6, None, grad_nonfinite=5)
    out.append(overflow)
    hot = healthy(crafted_run(marker), steps=30)
    for s in range(10, 30):
        replace_rows(hot, s, None, update_ratio=0.5)
    replace_step(hot, 25, grad_norm_total=1e4, lr=(f"{evil[3]}",))
    out.append(hot)
    under = healthy(crafted_run(marker), steps=12)
    for s in range(5, 12):
        replace_rows(under, s, None, zero_grad_ratio=1.0)
    out.append(under)
    lossy = healthy(crafted_run(marker), steps=8)
    replace_step(lossy, 5, loss=float("nan"))
    out.append(lossy)
    return out


def crafted_setup(marker: Path) -> fixes.Setup:
    """A Setup built directly (no setup_of validation): the builders must still write nothing raw."""
    evil = payloads(marker)
    return fixes.Setup(optimizer=evil[0], lr=evil[1], eps=evil[2], betas=(evil[3], 0.9),  # type: ignore[arg-type]
                       weight_decay=evil[4], param_dtype=evil[0], device=evil[1])  # type: ignore[arg-type]


def all_fixes(marker: Path) -> list[Fix]:
    found = [x for h in crafted_histories(marker) for f in run_rules(h) for x in f.fixes]
    s = crafted_setup(marker)
    found += [fixes.master_weights_fix(s), fixes.fused_fix(s), fixes.eps_fix(s), fixes.amsgrad_fix(s),
              fixes.autocast_scaler_fix(s), fixes.manual_loss_scale_fix(s), fixes.bf16_fix(s),
              fixes.lr_fix(s, 1e-3), fixes.loss_eps_fix(payloads(marker)[0])]
    found += [fixes.module_fp32_fix(name) for name in payloads(marker)]
    return found


def names_used_safely(snippet: str) -> None:
    tree = ast.parse(snippet)
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    defined |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
                for a in [*n.args, *filter(None, [n.vararg, n.kwarg])]}
    for node in ast.walk(tree):
        assert not isinstance(node, (ast.Import, ast.ImportFrom)), snippet
        if isinstance(node, ast.Name):
            assert node.id in CONTRACT_NAMES | defined | BUILTINS, (node.id, snippet)
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("__"), (node.attr, snippet)


def sandbox_exec(fix: Fix) -> None:
    """Run every section as the contract says, on a small real model; errors are fine, commands are not."""
    model = Fp16Blocks()
    ns: dict[str, Any] = {"torch": torch, "model": model, "scaler": None, "batch": batch(0),
                          "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4),
                          "compute_loss": lambda m, b: nn.functional.mse_loss(m(b[0]).float(), b[1])}
    parts = sections(fix)
    for code in (parts.setup, parts.loss, parts.iteration):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "cuda" autocast / GradScaler on a CPU-only machine
            with contextlib.suppress(Exception):  # a crafted module path need not exist; only commands matter
                exec(code, ns)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ran: list[str] = []
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd) or 0)
    yield tmp_path / "PWNED"
    assert ran == [], f"a snippet ran a command: {ran}"


def test_crafted_names_never_become_code(marker: Path) -> None:
    offered = all_fixes(marker)
    kinds = {f.kind for f in offered}
    assert {"dtype", "eps", "amsgrad", "scaler", "lr", "clip", "loss_eps"} <= kinds, kinds  # every builder reached
    for fix in offered:
        names_used_safely(fix.snippet)
        sandbox_exec(fix)
    assert not marker.exists()


def test_module_paths_are_repr_literals(marker: Path) -> None:
    for name in payloads(marker):
        tree = ast.parse(fixes.module_fp32_fix(name).snippet)
        call = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "get_submodule")
        assert [a.value for a in call.args] == [name]  # the exact name, as one string literal


def test_unknown_optimizer_class_is_not_written_as_a_name(marker: Path) -> None:
    s = fixes.setup_of(History(run=crafted_run(marker)))
    assert s.optimizer == "" and "type(optimizer)(master" in fixes.master_weights_fix(s).snippet
    assert s.device == "cuda" and s.param_dtype == "float16" and s.betas == (0.9, 0.999)


def test_stored_fixes_lose_their_code(marker: Path) -> None:
    stored = Finding("planted", "critical", "looks real", fixes=(Fix("dtype", "paste this", payloads(marker)[3]),))
    [kept] = [f for f in run_rules(History(run=RunInfo(), preflight=[stored])) if f.code == "planted"]
    assert kept.fixes[0].snippet == "" and kept.fixes[0].summary == "paste this"


def test_crafted_record_file(marker: Path, tmp_path: Path) -> None:
    """A real record, edited as an attacker would: device, optimizer, a localised module, a planted finding."""
    path = tmp_path / "run.sqlite"
    watched_run(path, steps=2)
    evil = payloads(marker)
    with sqlite3.connect(path) as conn:
        run = json.loads(conn.execute("SELECT value FROM slatmon_meta WHERE key='run'").fetchone()[0])
        run.update(device=evil[0], optimizer=f"AdamW{evil[1]}", torch_version=evil[2])
        planted = Finding("planted", "critical", evil[2], fixes=(Fix("dtype", evil[3], evil[3]),)).to_dict()
        conn.execute("UPDATE slatmon_meta SET value=? WHERE key='run'", (json.dumps(run),))
        conn.execute("INSERT OR REPLACE INTO slatmon_meta VALUES ('preflight', ?)", (json.dumps([planted]),))
        conn.execute("INSERT INTO slatmon_events (step, kind, layer, tensor, detail) VALUES (2, 'localized', ?, "
                     "NULL, ?)", (evil[0], json.dumps({"direction": "forward", "dtype": "float16",
                                                        "in_absmax": 1.0, "out_absmax": None})))
    found = monitor.diagnose(str(path))
    assert any(f.code == "planted" for f in found)
    for fix in (x for f in found for x in f.fixes):
        names_used_safely(fix.snippet)
        sandbox_exec(fix)
    assert not marker.exists()
