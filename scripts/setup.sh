#!/usr/bin/env bash
# Set up everything slat-monitor's demo and tests need on a fresh Debian machine, idempotently:
# Debian packages (Prometheus, Alertmanager, Chromium) when run as root (scripts/apt-install.sh waits for
# another apt process's lock), and a virtual environment in .venv with the package installed editable and
# the CPU build of PyTorch (constraints-cpu.txt) and every extra the tests use (Lightning and Hugging
# Face included, for tests/integrations). A rerun skips pip when nothing it installs from changed
# (.venv/.slatmon-setup: a hash of pyproject.toml, constraints-cpu.txt and the options); SLATMON_REINSTALL=1
# forces it. On a GPU machine with its own torch, SLATMON_KEEP_TORCH=1 installs without the CPU pin.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages: ${need_apt[*]}"
        bash scripts/apt-install.sh "${need_apt[@]}"
    else
        echo "setup: missing ${need_apt[*]}; install them with: sudo apt-get install ${need_apt[*]}" >&2
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
constraint=(-c constraints-cpu.txt)
[ "${SLATMON_KEEP_TORCH:-0}" = 1 ] && constraint=()
extras=".[trainer,ops,dashboard,lightning,huggingface,bench,test]"
stamp_file=.venv/.slatmon-setup
stamp=$(cat pyproject.toml constraints-cpu.txt <(echo "$extras ${constraint[*]} $PWD") | sha256sum | cut -c1-16)
if [ "${SLATMON_REINSTALL:-0}" != 1 ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] \
        && .venv/bin/python -c 'import monitor.example, torch' 2>/dev/null; then
    echo "setup: .venv is up to date (pyproject.toml and constraints unchanged; SLATMON_REINSTALL=1 reinstalls)"
else
    rm -f "$stamp_file"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "${constraint[@]}" -e "$extras"
    echo "$stamp" > "$stamp_file"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
