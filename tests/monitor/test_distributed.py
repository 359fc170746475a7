"""Multi-process defaults: rank/world size from the torchrun environment, a port and a record per rank."""

from __future__ import annotations

import logging
import socket
import urllib.request
from pathlib import Path

import pytest
import torch

import monitor
from monitor.distributed import BASE_PORT, DistInfo, detect, record_path
from monitor.record import read_record
from tests.models import Fp16Blocks
from tests.realservers import free_port

TORCHRUN_ENV = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "job-7",
                "TORCHELASTIC_RESTART_COUNT": "2"}


def _model_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = Fp16Blocks(torch.float32)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def _port_of(w: monitor.Watcher) -> int:
    assert w.url is not None
    return int(w.url.rsplit(":", 1)[1].split("/")[0])


def test_detect_reads_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in TORCHRUN_ENV.items():
        monkeypatch.setenv(k, v)
    assert detect() == DistInfo(rank=3, local_rank=1, world_size=4, run_id="job-7", restart_count=2)
    assert detect(rank=0).rank == 0  # an explicit rank wins
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default without --rdzv-id
    assert detect().run_id == ""


def test_bad_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(monitor.ConfigError, match="WORLD_SIZE"):
        detect()


def test_record_path_per_rank() -> None:
    two = DistInfo(rank=1, world_size=2)
    assert record_path("runs/a.sqlite", two) == str(Path("runs/a.rank1.sqlite"))
    assert record_path("runs/{rank}/a.sqlite", two) == "runs/1/a.sqlite"
    assert record_path("runs/a.sqlite", DistInfo()) == "runs/a.sqlite"  # one process: path as given
    assert record_path(None, two) is None
    with pytest.raises(monitor.ConfigError, match="placeholder"):
        record_path("runs/{run}.sqlite", two)


def test_torchrun_labels_in_run_info_and_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in TORCHRUN_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SLATMON_RUN", raising=False)
    model, opt = _model_opt()
    with monitor.watch(model, opt, port=0, record=tmp_path / "r.sqlite") as w:
        body = urllib.request.urlopen(w.url, timeout=5).read().decode()
    assert w.run == "torchrun-job-7" and w.rank == 3
    assert w.record_path == str(tmp_path / "r.rank3.sqlite") and Path(w.record_path).is_file()
    line = next(x for x in body.splitlines() if x.startswith("slatmon_run_info{"))
    for label in ('rank="3"', 'local_rank="1"', 'world_size="4"', 'run_id="job-7"', 'restart_count="2"'):
        assert label in line
    info = read_record(w.record_path).run
    assert (info.world_size, info.local_rank, info.run_id) == (4, 1, "job-7")


def _local_rank_for(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `port` this process's default port (9108 + LOCAL_RANK) without touching 9108 itself."""
    assert port > BASE_PORT
    monkeypatch.setenv("LOCAL_RANK", str(port - BASE_PORT))


def test_default_port_is_base_plus_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    _local_rank_for(port, monkeypatch)
    model, opt = _model_opt()
    with monitor.watch(model, opt, run="t") as w:
        assert _port_of(w) == port


def test_busy_default_port_falls_back_but_an_explicit_one_fails(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        _local_rank_for(busy, monkeypatch)
        model, opt = _model_opt()
        with caplog.at_level(logging.WARNING, logger="monitor"), monitor.watch(model, opt, run="t") as w:
            assert _port_of(w) != busy
            assert urllib.request.urlopen(w.url, timeout=5).status == 200
            assert any(f"{busy} is busy" in r.getMessage() for r in caplog.records)
            with pytest.raises(monitor.ConfigError, match=f"cannot serve metrics on 127.0.0.1:{busy}"):
                monitor.watch(*_model_opt(), run="t", port=busy)


def test_second_watcher_in_one_process_gets_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    _local_rank_for(free_port(), monkeypatch)
    with monitor.watch(*_model_opt(), run="a") as a, monitor.watch(*_model_opt(), run="b") as b:
        assert _port_of(a) != _port_of(b)
