"""`slat-monitor`: one entry point, one module per sub-command under monitor/commands/.

Each command module defines `add_parser(subparsers) -> argparse.ArgumentParser` and
`run(args) -> int` (the exit status). Modules are imported only when present, so a command's
dependencies load only when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "diagnose", "stack", "grafana", "triage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slat-monitor", description="Mixed-precision training numerics: watch, diagnose, dashboards."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"monitor.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"monitor.commands.{name}":
                raise
            continue
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
