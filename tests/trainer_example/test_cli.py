"""`python -m monitor.example.train`: options, errors, and a watched run with a record."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.example.config import FAULTS, PRECISIONS
from monitor.example.train import main


def test_help_documents_every_mode_and_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in (*PRECISIONS, *FAULTS, "--watch", "--record", "--port", "--eps", "--amsgrad", "--device"):
        assert name in text, name


def test_unwatched_run_prints_steps_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--steps", "10", "--device", "cpu", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "step    1" in out and "step   10" in out and "run: config=tiny precision=fp32 fault=none" in out
    assert "diagnosis" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--record", "x.sqlite"], "--record needs --watch"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_settings_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_port_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--port", "eighty"])
    assert exc.value.code == 2
    assert "--port takes a number, 'auto' or 'none'" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["--device", "cuda", "--steps", "1"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_watched_run_writes_a_record_and_prints_the_diagnosis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "run.sqlite"
    argv = ["--fault", "eps-underflow", "--steps", "3", "--watch", "--record", str(record), "--port", "none"]
    assert main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert record.exists()
    assert "adam_eps_underflow" in out and "fix (1) [dtype]" in out
    assert main(argv) == 2  # the same record again would mix two runs
    assert "already exists" in capsys.readouterr().err


def test_step_printer_prints_the_moments_that_matter(capsys):
    from monitor.example.stats import StepRecord
    from monitor.example.train import step_printer

    on_step = step_printer()
    for i in range(1, 26):
        loss = 1.0 if i < 12 else float("nan")
        on_step(StepRecord(step=i, loss=loss, output_finite=True, grads_finite=True, skipped=False,
                           loss_scale=None, lr=1e-4, fp16_zero_grad_ratio=None,
                           nonfinite_params=() if i < 12 else ("a",), update_ratio=None, voxels=10))
    printed = [int(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert printed == [1, 10, 12]  # the first, every 10th while finite, every change of state


def test_run_name_and_fault_rank_options() -> None:
    """`--run-name` passes through torchrun (which reads a bare `--run` as its own --run-path); `--run`
    stays accepted; no option is ever taken from an abbreviation."""
    from monitor.example.train import build_parser

    parser = build_parser()
    assert parser.parse_args(["--run-name", "a", "--fault-rank", "1"]).run == "a"
    assert parser.parse_args(["--run", "b"]).run == "b"
    assert parser.parse_args([]).fault_rank is None and parser.parse_args([]).port == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--run-n", "c"])
