"""Issue #9, class 3 (fixes slice): names from a model, a run record or Prometheus reach the terminal as
text. Escape sequences (ESC as \\x1b), carriage returns, bells, bidirectional overrides and newlines in
layer names are shown escaped in `slat-monitor diagnose`, the demo's report, error messages and the
pre-flight warning at watch(); a newline in a name cannot forge a line of the report.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import monitor
from monitor.cli import main as cli_main
from monitor.diagnosis import run_rules
from monitor.diagnosis.report import to_text
from monitor.findings import Finding, Fix
from monitor.history import History
from monitor.terminal import printable
from tests.diagnosis.histories import FP16_BLOCKS, run_info
from tests.models import batch

EVIL = "blk\x1b[2J\x1b]0;pwned\x07\r\n1. [CRITICAL] forged: all clear\u202etxt"
MODULE = EVIL.replace(".", ":")  # nn.Module refuses "." in a module name; everything else goes
FORBIDDEN = ["\x1b", "\x07", "\r", "\u202e"]


def clean(text: str) -> None:
    for ch in FORBIDDEN:
        assert ch not in text, repr(ch)


def test_printable_escapes_what_a_terminal_acts_on() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb" and printable("x\ny\rz\t") == "x\\ny\\rz\\t"
    assert printable("\u202e\x9b\x7f") == "\\u202e\\x9b\\x7f"
    assert printable("blocks.0 élan 模块") == "blocks.0 élan 模块"  # ordinary text of any script stays


def crafted_findings() -> list[Finding]:
    layers = {**FP16_BLOCKS, EVIL: "float16"}
    found = run_rules(History(run=run_info(layers, eps=1e-8, optimizer=f"AdamW{EVIL}")))
    planted = Finding(EVIL, "warning", EVIL, (EVIL,), 3, (EVIL,), (Fix("lr", EVIL, f"x = {EVIL!r}"),), (EVIL,))
    return [*found, planted]


@pytest.mark.parametrize("verbose", [False, True])
def test_report_escapes_names_and_forges_no_line(verbose: bool) -> None:
    findings = crafted_findings()
    text = to_text(findings, History(run=dataclasses.replace(run_info(), run=EVIL)), verbose)
    clean(text)
    assert "\\x1b[2J" in text
    numbered = [line for line in text.splitlines() if line[:1].isdigit() and ". [" in line[:6]]
    assert len(numbered) == len(findings)  # "1. [CRITICAL] forged" stays inside its own line


def test_demo_report_escapes_names() -> None:
    from monitor.example.report import format_findings

    out = format_findings(crafted_findings(), verbose=True)
    clean(out)
    assert "forged: all clear" in out and "\\n1. [CRITICAL] forged" in out


class Named(nn.Module):
    """A model whose block's module name is MODULE."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Linear(16, 32)
        self.add_module(MODULE, nn.Linear(32, 32).half())
        self.out_layer = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(getattr(self, MODULE)(self.input_layer(x).half()).float())


def test_cli_on_a_record_of_a_model_with_a_crafted_layer_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    record = tmp_path / "evil.sqlite"
    torch.manual_seed(0)
    model = Named()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)  # TRELLIS #162: a critical finding
    with monitor.watch(model, opt, port=None, record=str(record), run="evil"):
        for step in range(2):
            x, y = batch(step)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for flag in ([], ["--verbose"]):
        assert cli_main(["diagnose", str(record), *flag]) == 1
        out = capsys.readouterr().out
        clean(out)
        assert "\\x1b[2J" in out and "\n1: [CRITICAL] forged" not in out


def test_cli_error_messages_escape_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["diagnose", str(tmp_path / f"{EVIL}.sqlite")]) == 2
    err = capsys.readouterr().err
    clean(err)
    assert len(err.strip().splitlines()) == 1 and "\\x1b[2J" in err


def test_preflight_warning_escapes_names(caplog: pytest.LogCaptureFixture) -> None:
    model = Named()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    with caplog.at_level(logging.WARNING, logger="monitor"), monitor.watch(model, opt, port=None):
        pass
    [line] = [r.getMessage() for r in caplog.records if "pre-flight" in r.getMessage()]
    clean(line)
    assert "\n" not in line


def test_demo_error_escapes_the_record_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / f"{MODULE}.sqlite"
    existing.write_bytes(b"")  # the demo refuses to mix two runs into one record: an error naming the path
    assert cli_main(["demo", "--steps", "1", "--record", str(existing)]) == 2
    captured = capsys.readouterr()
    clean(captured.out + captured.err)
    assert "already exists" in captured.err and "\\x1b[2J" in captured.err
