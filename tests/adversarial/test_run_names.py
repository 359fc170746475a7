"""Default run names are unique (issue #9): processes started in the same second used to share one, and
Prometheus then merged a failing run into a healthy one. Now: time + pid + a random part; the ranks of
one job still share one label (torchrun's rendezvous id, else a hash of MASTER_ADDR:MASTER_PORT)."""

from __future__ import annotations

import multiprocessing
import re

import torch

import monitor
from monitor.config import default_run
from tests.models import Fp16Blocks, scraping_prometheus, watched_step

SECOND = 1_800_000_000.0  # one fixed clock reading: "started in the same second"


def _name_in_child(queue) -> None:
    queue.put(default_run(None, now=lambda: SECOND))


def test_two_processes_started_in_the_same_second_get_different_names(monkeypatch):
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    ctx = multiprocessing.get_context("fork")  # two real processes, this interpreter's state (no re-import)
    queue = ctx.Queue()
    children = [ctx.Process(target=_name_in_child, args=(queue,)) for _ in range(2)]
    for c in children:
        c.start()
    names = [queue.get(timeout=60) for _ in children]
    for c in children:
        c.join(timeout=60)
    stamp = default_run(None, now=lambda: SECOND).rsplit("-", 2)[0]
    assert names[0] != names[1] and all(n.startswith(stamp + "-") for n in names)
    pids = {int(n.rsplit("-", 2)[1]) for n in names}
    assert pids == {c.pid for c in children}


def test_one_process_never_makes_the_same_default_name_twice(monkeypatch):
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    names = [default_run(None, now=lambda: SECOND) for _ in range(200)]
    assert len(set(names)) == 200
    assert all(re.fullmatch(r"run-\d{8}-\d{6}-\d+-[0-9a-f]{4}", n) for n in names)


def test_ranks_of_one_job_share_a_label_and_other_jobs_do_not(monkeypatch):
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    rank0, rank1 = (default_run(None, now=lambda: SECOND, world_size=2) for _ in range(2))
    monkeypatch.setenv("MASTER_PORT", "29501")
    other = default_run(None, now=lambda: SECOND, world_size=2)
    assert rank0 == rank1 != other
    assert default_run(None, run_id="abc", world_size=2) == "torchrun-abc"  # the rendezvous id wins


def test_watch_under_torchrun_without_a_rendezvous_id_names_every_rank_alike(monkeypatch):
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    env = {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
           "TORCHELASTIC_RUN_ID": "none"}
    names = []
    for rank in ("0", "1"):
        for k, v in {**env, "RANK": rank}.items():
            monkeypatch.setenv(k, v)
        model = Fp16Blocks(torch.float32)
        with monitor.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), port=None) as w:
            names.append((w.run, w.rank))
    assert names[0][0].rsplit("-", 1)[1] == names[1][0].rsplit("-", 1)[1]  # the job's suffix
    assert [r for _, r in names] == [0, 1]


def test_prometheus_keeps_two_default_named_runs_apart(servers, tmp_path, monkeypatch):
    """A failing and a healthy run, both with default names, made back to back and scraped by a real
    Prometheus: diagnosing each by its label sees only its own series."""
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    targets = tmp_path / "targets"
    url, waiter, release = scraping_prometheus(servers, targets, name="names")
    runs = []
    for dtype, eps in ((torch.float16, 1e-8), (torch.float32, 1e-8)):  # TRELLIS #162 shape, then healthy
        torch.manual_seed(0)
        model = Fp16Blocks(dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=eps)
        runs.append((model, opt, monitor.watch(model, opt, port=0, targets_dir=targets)))  # registered now
    failing, healthy = (w for _, _, w in runs)
    assert failing.run != healthy.run
    try:
        for step in (1, 2):
            for model, opt, w in runs:
                watched_step(model, opt, w, step)
        for _, _, w in runs:
            waiter(w.run)(2, w)  # Prometheus has scraped both runs' last step
    finally:
        for _, _, w in runs:
            w.close()
        release()
    bad = {f.code: f.severity for f in monitor.diagnose(url, run=failing.run)}
    good = {f.code: f.severity for f in monitor.diagnose(url, run=healthy.run)}
    assert "critical" in bad.values() and "critical" not in good.values()
    assert not set(bad) & set(good), (bad, good)
