#!/usr/bin/env bash
# Set up everything slat-monitor's demo and tests need on a fresh Debian machine, idempotently:
# Debian packages (Prometheus, Alertmanager, Chromium) when run as root, and a virtual environment
# in .venv with the CPU build of PyTorch (constraints-cpu.txt). On a GPU machine with its own torch,
# set SLATMON_KEEP_TORCH=1 to install without the CPU pin into the current interpreter's venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages: ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        # Debian starts these as services on install where it can; we start our own on loopback ports.
        for svc in prometheus prometheus-alertmanager; do
            (service "$svc" stop || true) >/dev/null 2>&1
        done
    else
        echo "setup: missing ${need_apt[*]}; install them with: sudo apt-get install ${need_apt[*]}" >&2
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
constraint=(-c constraints-cpu.txt)
[ "${SLATMON_KEEP_TORCH:-0}" = 1 ] && constraint=()
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${constraint[@]}" -e ".[trainer,ops,dashboard,bench,test]"
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
