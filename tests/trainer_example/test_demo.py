"""`slat-monitor demo` (monitor/commands/demo.py) and the GPU check's CPU dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monitor.cli import main as cli_main
from monitor.example import gpu_check


def test_demo_defaults_to_162_with_a_record_under_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["demo", "--steps", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "precision fp16-naive, fault eps-underflow" in out
    records = list((tmp_path / "runs").glob("demo-eps-underflow-*.sqlite"))
    assert len(records) == 1
    assert "adam_eps_underflow" in out and "parameters non-finite after step 1" in out


def test_demo_takes_fault_and_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "d.sqlite"
    argv = ["demo", "--fault", "none", "--precision", "fp32", "--steps", "2", "--record", str(record)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "precision=fp32 fault=none" in out and record.exists()


def test_gpu_check_dry_run_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--device", "cpu", "--config", "tiny", "--steps", "2", "--modes", "fp16-naive"]
    assert gpu_check.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["check"] == "env" and lines[0]["spconv_algo"] == "Native (CPU)"
    mode = lines[1]
    assert mode["mode"] == "fp16-naive" and mode["eps"] == 1e-8 and mode["ms_per_step"] > 0
    assert mode["fp16_params_nonfinite_after_step1"] == mode["fp16_params"] > 0
    assert mode["fp32_params_nonfinite_after_step1"] == 0


def test_gpu_check_without_cuda_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main([]) == 1
    assert "no CUDA device" in json.loads(capsys.readouterr().out)["error"]


def test_demo_162_output_is_short_and_the_rest_one_flag_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #13: the default demo (TRELLIS #162) prints at most 40 lines (12 steps print the same lines as
    the default 50: step 1, step 2, then NaN to the end); --verbose (demo or diagnose) adds every evidence
    line, the per-layer details and every fix's code."""
    monkeypatch.chdir(tmp_path)
    assert cli_main(["demo", "--steps", "12", "--record", "demo.sqlite"]) == 0  # prints what 50 steps do
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40, out
    assert "adam_eps_underflow" in out and "13 more (--verbose)" in out
    assert out.count("# once, after the model") == 1  # one snippet: the top finding's first fix
    assert cli_main(["diagnose", "demo.sqlite", "--verbose"]) == 1
    full = capsys.readouterr().out
    assert len(full.splitlines()) > 2 * len(out.splitlines())
    assert "per layer:" in full and 'group["eps"] = 0.0001' in full and "same fix as 1(1)" in full
    assert cli_main(["demo", "--steps", "2", "--quiet", "--verbose", "--record", "v.sqlite"]) == 0
    assert "per layer:" in capsys.readouterr().out
