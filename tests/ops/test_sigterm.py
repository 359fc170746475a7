"""Target files: mode 0644, removed on SIGTERM in a real process, the previous handler chained and restored."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from monitor.ops.targets import register
from tests.realservers import wait_until

CHILD = """
import signal, sys, time
from pathlib import Path
from monitor.ops.targets import register
if sys.argv[2] == "chained":
    def previous(signum, frame):
        Path(sys.argv[1], "previous-ran").write_text("yes")
        sys.exit(7)
    signal.signal(signal.SIGTERM, previous)
register(Path(sys.argv[1]) / "targets", "127.0.0.1", 9999, run="r", rank=1)
print("ready", flush=True)
time.sleep(60)
"""


def _child(tmp_path: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _targets(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "targets").glob("*.json"))


def test_target_file_is_world_readable(tmp_path: Path) -> None:
    with register(tmp_path, "127.0.0.1", 1, run="r") as reg:
        assert stat.S_IMODE(reg.path.stat().st_mode) == 0o644


def test_sigterm_removes_the_target_and_still_kills(tmp_path: Path) -> None:
    proc = _child(tmp_path, "default")
    assert len(_targets(tmp_path)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # died of the signal, as without the monitor
    assert _targets(tmp_path) == []


def test_sigterm_chains_to_the_previous_handler(tmp_path: Path) -> None:
    proc = _child(tmp_path, "chained")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 7
    assert (tmp_path / "previous-ran").read_text() == "yes"
    assert _targets(tmp_path) == []


def test_close_restores_the_previous_handler(tmp_path: Path) -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        a = register(tmp_path, "127.0.0.1", 1, run="a")
        b = register(tmp_path, "127.0.0.1", 2, run="b")
        assert signal.getsignal(signal.SIGTERM) is not mine
        a.remove()
        assert signal.getsignal(signal.SIGTERM) is not mine, "b is still registered"
        b.remove()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


def test_killed_process_leaves_its_file(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the file stays and SlatmonTargetDown fires, which is the intended signal."""
    proc = _child(tmp_path, "default")
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.1)
    wait_until(lambda: len(_targets(tmp_path)) == 1, timeout=5)


def test_a_handler_installed_after_ours_is_left_alone_and_chained_next_time(tmp_path: Path) -> None:
    def later(signum: int, frame: object) -> None:
        pass

    old = signal.getsignal(signal.SIGTERM)
    try:
        a = register(tmp_path, "127.0.0.1", 1, run="a")
        signal.signal(signal.SIGTERM, later)  # the user's own handler, after ours
        a.remove()
        assert signal.getsignal(signal.SIGTERM) is later, "theirs is not replaced on close"
        b = register(tmp_path, "127.0.0.1", 2, run="b")
        assert signal.getsignal(signal.SIGTERM) is not later  # ours again, chaining to theirs
        b.remove()
        assert signal.getsignal(signal.SIGTERM) is later
    finally:
        signal.signal(signal.SIGTERM, old)
