#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole test suite: lint, the public-contract check, pytest.
# Tests start their own servers (Prometheus, Alertmanager, Streamlit, Chromium) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/ruff check .
if [ -f ../shared/checks/contract.py ]; then
    .venv/bin/python ../shared/checks/contract.py
fi
.venv/bin/python -m pytest -q "$@"
