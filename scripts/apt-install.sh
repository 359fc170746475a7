#!/usr/bin/env bash
# Install Debian packages (as root): `bash scripts/apt-install.sh PKG...`. Called by scripts/setup.sh.
# Waits while another apt/dpkg process (unattended-upgrades, a second setup) holds apt's locks, up to
# SLATMON_APT_LOCK_WAIT_S seconds (default 600), instead of failing. Installs from the current package
# lists first and runs `apt-get update` only when that fails (a fresh image has empty lists).
# Stops the services Debian starts on install: slat-monitor starts its own servers on loopback ports.
set -euo pipefail
wait_s=${SLATMON_APT_LOCK_WAIT_S:-600}
LOCK_ERRORS='Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock (the )?(directory|administration)'

# apt_get show|hide ARGS...: apt-get ARGS, retried while a lock is held; `hide` drops the final error
# (not a lock timeout's: that one sets lock_timed_out=1 and is always shown).
lock_timed_out=0
apt_get() {
    local errors=$1 deadline=$((SECONDS + wait_s)) err status
    shift
    err=$(mktemp)
    while true; do
        status=0
        DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>"$err" || status=$?
        if [ "$status" = 0 ]; then
            rm -f "$err"
            return 0
        fi
        if grep -qE "$LOCK_ERRORS" "$err"; then
            if [ "$SECONDS" -lt "$deadline" ]; then
                echo "setup: another apt/dpkg process holds the lock; waiting ($((deadline - SECONDS)) s left)" >&2
                sleep 5
                continue
            fi
            errors=show lock_timed_out=1
        fi
        [ "$errors" = hide ] || cat "$err" >&2
        rm -f "$err"
        return "$status"
    done
}

[ $# -gt 0 ] || { echo "usage: bash scripts/apt-install.sh PKG..." >&2; exit 2; }
install=(install -y -qq --no-install-recommends "$@")
if ! apt_get hide "${install[@]}" >/dev/null; then
    [ "$lock_timed_out" = 0 ] || exit 1
    apt_get show update -qq
    apt_get show "${install[@]}" >/dev/null
fi
for svc in prometheus prometheus-alertmanager; do
    (service "$svc" stop || true) >/dev/null 2>&1
done
