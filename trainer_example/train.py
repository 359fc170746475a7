"""`python -m monitor.example.train`: train the SLAT VAE example, optionally watched by slat-monitor.

Python API: `run(TrainConfig(...)) -> RunResult` (see monitor.example.loop); this module adds the
command line: `build_parser()`, `config_from_args(args)`, `main(argv)`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from monitor.terminal import printable

from .config import FAULTS, MODEL_PRESETS, PRECISIONS, TrainConfig
from .report import format_findings, format_step, format_summary

if TYPE_CHECKING:
    from .loop import RunResult
    from .stats import StepRecord

__all__ = ["RunResult", "TrainConfig", "build_parser", "config_from_args", "main", "run"]

EPILOG = """\
precision modes (TRELLIS):
  fp32        fp32 model, AdamW
  inflat_all  blocks fp16, in/out layers + norms fp32, one flat fp32 master param in AdamW,
              loss x 2**log_scale (starts at 20; -1 and skip on overflow, +1e-3 per clean step)
  amp         fp32 weights, torch.autocast(float16) + torch.amp.GradScaler
  fp16-naive  blocks fp16, AdamW straight on the fp16 params, no scaling (TRELLIS #162)
  auto        the mode each fault is meant for (in brackets below)

faults (steps count from 1; k = --fault-step) and their signatures:
  none           [inflat_all] finite, decreasing loss
  eps-underflow  [fp16-naive] AdamW eps 1e-8 (PyTorch default) on fp16 state: step 1 grads finite,
                 every fp16 block param NaN/Inf right after optimizer.step(), fp32 layers finite
  overflow       [fp16-naive] from k, encoder block 0 attention logits x1e6 pass fp16's 65504:
                 first non-finite activation encoder.blocks.0.attn.core at k, then grads/params
  loss-nan       [inflat_all] at k only, 0*log(0) in the volume loss term: loss NaN with finite
                 outputs, step k skipped, log_scale - 1, training resumes
  lr-spike       [fp32] lr x1000 from k: update/param ratio jumps ~1000x, loss climbs
  underflow      [fp16-naive] loss x 2**-24 before backward from k, no scaler: ~all fp16 grads
                 exactly zero, fp32 head grads not
  grad-corrupt   [fp32] from k, decoder out_layer grads x(1+1e-3) after backward (after DDP's
                 all-reduce): with --fault-rank, that rank's grad norm differs from the others'

many processes (DDP: gloo on the CPU, nccl on GPUs; ranks print "[rank N]" before each line):
  torchrun --nproc_per_node 2 -m monitor.example.train --watch --record runs/ddp.sqlite \
      --fault loss-nan --fault-rank 1 --run-name ddp-demo
  each rank serves /metrics on 9108 + LOCAL_RANK and writes runs/ddp.rankN.sqlite

default eps: 1e-8, except fp16-naive without eps-underflow: 1e-4 (fp16 rounds 1e-8 to 0).
example (the README demo):
  python -m monitor.example.train --config tiny --precision fp16-naive --fault eps-underflow \\
      --steps 50 --watch --record runs/demo.sqlite --port none
"""


def run(cfg: TrainConfig, on_step: Callable[[StepRecord], None] | None = None) -> RunResult:
    """Train as `cfg` says; see `monitor.example.loop.run`. Imported lazily so that building this
    command line (e.g. for `slat-monitor --help`) does not import spconv."""
    from .loop import run as _run

    return _run(cfg, on_step)


def _port(text: str) -> int | str | None:
    if text.lower() in ("none", "auto"):
        return None if text.lower() == "none" else "auto"
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port takes a number, 'auto' or 'none', got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be in 0..65535 (0: any free port), got {port}")
    return port


def add_training_args(
    p: argparse.ArgumentParser, steps: int = 50, port: int | str | None = "auto", precision: str = "auto",
    fault: str = "none",
) -> None:
    """The options shared by this command and `slat-monitor demo` (which changes the defaults)."""
    p.add_argument(
        "--config",
        choices=sorted(MODEL_PRESETS),
        default="tiny",
        help="model size: tiny (CPU, 32^3) or base (TRELLIS size, 64^3, for a GPU); default tiny",
    )
    p.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default=precision,
        help=f"precision mode; auto: the one the fault is meant for; default {precision}",
    )
    p.add_argument(
        "--fault",
        choices=FAULTS,
        default=fault,
        help=f"fault to inject (signatures: python -m monitor.example.train --help); default {fault}",
    )
    p.add_argument("--fault-step", type=int, default=10, help="step (from 1) the fault starts at; default 10")
    p.add_argument("--fault-rank", type=int, default=None,
                   help="under torchrun, inject the fault on this rank only; default every rank")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps; default {steps}")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate; default 1e-4 (TRELLIS)")
    p.add_argument(
        "--eps", type=float, default=None, help="AdamW eps; default 1e-8, 1e-4 for fp16-naive without eps-underflow"
    )
    p.add_argument("--amsgrad", action="store_true", help="AdamW(amsgrad=True)")
    p.add_argument("--clip", type=float, default=None, help="clip the global grad norm to this; default off")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init and the data; default 0")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--run-name", "--run", dest="run", default=None,
                   help="run label for the monitor; default CONFIG-PRECISION-FAULT (under torchrun use "
                   "--run-name: torchrun takes --run for an abbreviation of its own --run-path)")
    p.add_argument(
        "--port",
        type=_port,
        default=port,
        help="metrics endpoint port of the watched run: N, 0 (any free port), auto (9108 + LOCAL_RANK, a free "
        f"port when busy) or none; default {'none' if port is None else port}",
    )
    p.add_argument("--every", type=int, default=1, help="monitor samples every N steps; default 1")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; default 1 on the CPU")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monitor.example.train",
        description="Train the SLAT VAE example on synthetic voxels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `--run` must never be read as an abbreviation (torchrun's mistake, see --run-name)
    )
    add_training_args(p)
    p.add_argument("--watch", action="store_true", help="watch the run with slat-monitor (monitor.watch)")
    p.add_argument("--record", default=None, help="write the monitor's run record (SQLite) here; needs --watch")
    p.add_argument("--quiet", action="store_true", help="print only the summary and the diagnosis")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print the whole diagnosis: every evidence line, per-layer details, every fix's code")
    return p


def config_from_args(args: argparse.Namespace, watch: bool, record: str | None) -> TrainConfig:
    return TrainConfig(
        config=args.config,
        precision=args.precision,
        fault=args.fault,
        fault_step=args.fault_step,
        fault_rank=args.fault_rank,
        steps=args.steps,
        lr=args.lr,
        eps=args.eps,
        amsgrad=args.amsgrad,
        clip=args.clip,
        seed=args.seed,
        device=args.device,
        watch=watch,
        record=record,
        port=args.port,
        run=args.run,
        watch_every=args.every,
        threads=args.threads,
    )


def quiet_third_party_noise() -> None:
    """spconv 2.3 triggers torch deprecation warnings and one torch.fx log line; none is actionable."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="spconv")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


def rank_prefix() -> str:
    """`[rank N] ` under torchrun with several processes (their lines interleave), "" otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return f"[rank {os.environ.get('RANK', '0')}] "
    return ""


def say(text: str) -> None:
    """Print `text`, every line prefixed with the rank under torchrun."""
    prefix = rank_prefix()
    text = "\n".join(prefix + line for line in text.splitlines()) if prefix else text
    sys.stdout.write(text + "\n")  # one write: the ranks' lines never break into each other
    sys.stdout.flush()


def step_printer() -> Callable[[StepRecord], None]:
    """Prints the first step, every step whose state changes (finite loss or not, skipped or not, how
    many parameters are non-finite) and every 10th while the loss is finite: the moments that matter,
    not 50 NaN lines (the summary after the run has the last loss)."""
    last: list[tuple[bool, bool, int]] = []

    def on_step(s: StepRecord) -> None:
        state = (s.loss == s.loss and abs(s.loss) != float("inf"), s.skipped, len(s.nonfinite_params))
        if not last or state != last[-1] or (s.step % 10 == 0 and state[0]):
            say(format_step(s))
        last[:] = [state]

    return on_step


def run_and_report(cfg: TrainConfig, quiet: bool = False, verbose: bool = False) -> RunResult:
    """Run `cfg`, printing the steps that matter (unless `quiet`), the summary and the diagnosis (short;
    every evidence line and snippet with `verbose`)."""
    quiet_third_party_noise()
    result = run(cfg, on_step=None if quiet else step_printer())
    say(format_summary(result))
    if result.url:
        say(f"metrics were served at {result.url}")
    if result.record:
        say(f"run record: {printable(result.record)}  (slat-monitor diagnose {printable(result.record)})")
    if cfg.watch:
        say(format_findings(result.findings, verbose))
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.record and not args.watch:
        print("error: --record needs --watch (the run record is written by the monitor)", file=sys.stderr)
        return 2
    try:
        run_and_report(config_from_args(args, args.watch, args.record), quiet=args.quiet, verbose=args.verbose)
    except ValueError as exc:
        print(f"{rank_prefix()}error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the metrics port is taken
        hint = "; pass --port 0 (any free port) or --port none" if args.watch and args.port else ""
        print(f"{rank_prefix()}error: {printable(exc)}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
