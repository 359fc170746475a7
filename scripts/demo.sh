#!/usr/bin/env bash
# The README's first command: set up (scripts/setup.sh), then train the tiny SLAT VAE example in
# fp16-naive with AdamW eps 1e-8 (TRELLIS #162), watched by slat-monitor, and print the diagnosis.
# The run record lands in runs/. Extra arguments go to `slat-monitor demo` (see --help), e.g.
#   bash scripts/demo.sh --fault overflow --precision auto
#   bash scripts/demo.sh --eps 1e-4          # the fix: no non-finite parameters
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x .venv/bin/slat-monitor ]; then
    exec .venv/bin/slat-monitor demo "$@"
fi
exec .venv/bin/python -m monitor demo "$@"
