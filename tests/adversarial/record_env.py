"""Real faults for the run-record tests: another process holding the database locked, a small disk, a
read-only folder, and the training runs (watched or not) whose weights must come out bitwise equal."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import monitor
from tests.models import Fp16Blocks, batch

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("LOCKED", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def train(steps: int, *, record: Path | None = None, between: Callable[[int, monitor.Watcher], None] | None = None,
          port: int | None = None) -> tuple[dict[str, torch.Tensor], monitor.Watcher | None]:
    """`steps` AdamW steps of the fp32 Fp16Blocks model, watched when `record` is given; the final weights and
    the (closed) watcher. `between(step, watcher)` runs after each step, before the next."""
    torch.manual_seed(0)
    model = Fp16Blocks(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = None if record is None else monitor.watch(model, opt, port=port, record=str(record), run="faults")
    try:
        for step in range(1, steps + 1):
            x, y = batch(step)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            if w is not None:
                w.observe_loss(loss)
            loss.backward()
            opt.step()
            if between is not None and w is not None:
                between(step, w)
    finally:
        if w is not None:
            w.close()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, w


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Locker:
    """Another real process holding the database EXCLUSIVE-locked until `release()`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "LOCKED"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate("\n", timeout=30)
        assert self.proc.returncode == 0


def checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256). Never on a record being written in this process:
    closing a descriptor of it drops the writer's locks."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class SmallDisk:
    """A folder whose free space can be used up and given back: a 1 MiB tmpfs where this process may mount
    one (root with CAP_SYS_ADMIN), else RLIMIT_FSIZE on this process (files stop growing: EFBIG)."""

    def __init__(self, tmp: Path) -> None:
        self.folder = tmp / f"disk-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        self.tmpfs = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.folder))
        self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        self._handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process

    def fill(self) -> None:
        """No room left for the record to grow (a few KiB on tmpfs, none under the limit)."""
        if self.tmpfs:
            st = os.statvfs(self.folder)
            with contextlib.suppress(OSError), open(self.folder / "filler", "wb") as f:
                f.write(b"\0" * max(st.f_bavail * st.f_frsize - 8192, 0))
        else:
            biggest = max((p.stat().st_size for p in self.folder.iterdir()), default=0)
            resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + 4096, self._limit[1]))

    def free(self) -> None:
        if self.tmpfs:
            (self.folder / "filler").unlink(missing_ok=True)
        else:
            resource.setrlimit(resource.RLIMIT_FSIZE, self._limit)

    def close(self) -> None:
        self.free()
        signal.signal(signal.SIGXFSZ, self._handler)
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` seen through a read-only view: a read-only bind mount (root), else the folder chmod 0555."""
    view = folder.parent / f"{folder.name}-ro"
    view.mkdir()
    if os.geteuid() == 0:
        if not (_mount("--bind", str(folder), str(view)) and _mount("-o", "remount,bind,ro", str(view))):
            subprocess.run(["umount", "-l", str(view)], check=False)
            pytest.skip("a read-only bind mount needs CAP_SYS_ADMIN (root in a container without it)")
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
        return
    view.rmdir()
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(mode)
