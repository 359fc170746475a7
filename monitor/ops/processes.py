"""Start server binaries (Prometheus, Alertmanager) as child processes, wait until ready, stop them cleanly.

Used by `slat-monitor stack`. Each child logs to a file; `stop()` sends SIGTERM (both servers flush and
exit cleanly on it) and SIGKILL after a grace period.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["INSTALL_HINTS", "Child", "find_binary", "port_free", "start_child"]

# binary -> how to get it (the Debian package of the same name).
INSTALL_HINTS = {
    "prometheus": "sudo apt-get install prometheus   (Debian/Ubuntu; or https://prometheus.io/download/)",
    "prometheus-alertmanager": "sudo apt-get install prometheus-alertmanager   (Debian/Ubuntu)",
}


def find_binary(name: str, alternatives: tuple[str, ...] = ()) -> str | None:
    """Absolute path of the first of `name`, *alternatives* on PATH, or None."""
    for candidate in (name, *alternatives):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    """A started server: `name`, `url`, the process and its log file."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL; returns the exit status. Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def start_child(name: str, argv: list[str], port: int, log: Path, ready_timeout_s: float = 60.0) -> Child:
    """Run `argv` (listening on 127.0.0.1:`port`) and wait for its /-/ready; ConfigError with the log
    tail when it exits or is not ready in time."""
    if not port_free(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use; choose another with the {name} port option")
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # Ctrl-C reaches us only; we stop children in order
    child = Child(name, f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + ready_timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{child.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return child
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    child.stop()
    raise ConfigError(f"{name} did not start (exit status {proc.returncode}); last lines of {log}:\n"
                      f"{child.log_tail()}")
