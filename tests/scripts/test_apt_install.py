"""scripts/apt-install.sh (called by scripts/setup.sh) waits while another process holds dpkg's lock.

Real apt-get, real lock: the test takes dpkg's frontend lock the way apt does (fcntl), starts the script
for packages that are already installed (apt-get has nothing to download or change), releases the lock
after a few seconds and expects the script to have waited, said so, and succeeded.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = "/var/lib/dpkg/lock-frontend"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("prometheus") is None,
    reason="needs root, apt-get and the Debian prometheus package installed")


def _hold_lock(timeout_s: float = 120) -> int:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:  # a real apt run holds it: wait for it like the script does
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"{LOCK} stayed locked for {timeout_s} s")
            time.sleep(1)


def test_waits_for_the_dpkg_lock_then_installs() -> None:
    fd = _hold_lock()
    try:
        proc = subprocess.Popen(["bash", "scripts/apt-install.sh", "prometheus"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(6)
        assert proc.poll() is None, proc.communicate()[0]  # still waiting, not failed
    finally:
        os.close(fd)  # releases the lock
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "another apt/dpkg process holds the lock; waiting" in out


def test_gives_up_after_the_wait_limit_with_apt_s_error() -> None:
    """Past SLATMON_APT_LOCK_WAIT_S it fails with apt's own message (and does not go on to `apt-get update`)."""
    fd = _hold_lock()
    try:
        out = subprocess.run(["bash", "scripts/apt-install.sh", "prometheus"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "SLATMON_APT_LOCK_WAIT_S": "3"})
    finally:
        os.close(fd)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "waiting" in out.stderr
    assert "Unable to acquire the dpkg frontend lock" in out.stderr or "Could not get lock" in out.stderr
