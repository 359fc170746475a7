"""Sub-commands of `slat-monitor` (see monitor/cli.py)."""
