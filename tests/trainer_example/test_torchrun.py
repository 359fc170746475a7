"""Real `torchrun --nproc_per_node 2` jobs (DDP, gloo, CPU) of the SLAT VAE, watched with the defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from monitor.ops.configs import prometheus_config
from tests.realservers import wait_until

from .torchrun import ROOT, finish, job, launch

pytestmark = pytest.mark.slow
DRIVER = str(Path(__file__).with_name("ddp_driver.py"))
RULES = str(ROOT / "prometheus" / "rules" / "*.yml")


def _prometheus(servers, targets: Path, rules: bool = False):
    return servers.prometheus(prometheus_config(targets_glob=str(targets / "*.json"),
                                                rule_globs=(RULES,) if rules else (), alertmanager=None,
                                                interval="1s"))


def _ranks_seen(prom, expr: str) -> set[str]:
    return {r["metric"]["rank"] for r in prom.query(expr)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def _wait_or_fail(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """wait_until, but an AssertionError from `predicate` (the job died) ends the wait at once."""
    box: list[AssertionError] = []

    def check() -> Any:
        try:
            return predicate()
        except AssertionError as exc:
            box.append(exc)
            return True

    value = wait_until(check, timeout=timeout, what=what)
    if box:
        raise box[0]
    return value


def _drive(tmp_path: Path, prom, fault: str, fault_rank: str, *extra: str,
           until: Callable[[], Any] = lambda: True) -> tuple[list[dict], Any]:
    """Run the driver job; release its last step once Prometheus has scraped both ranks' last step and
    `until()` is truthy (checked while the ranks are still live). Returns (per-rank results, until())."""
    out, targets = tmp_path / "out", tmp_path / "targets"
    out.mkdir()
    proc = launch(DRIVER, str(out), fault, fault_rank, *extra, cwd=tmp_path, SLATMON_TARGETS_DIR=str(targets))
    def scraped() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before it was scraped:\n{proc.communicate()[0][-4000:]}")
        return _ranks_seen(prom, 'slatmon_step{run="ddp-test"} >= 3') == {"0", "1"}

    try:
        _wait_or_fail(scraped, timeout=180, what="Prometheus scraping step 3 of both ranks")
        seen = wait_until(until, timeout=60, what="the live-run condition")
        (out / "go").touch()
        finish(proc)
    finally:
        (out / "go").touch()
        if proc.poll() is None:
            proc.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)], seen


def test_defaults_two_ranks_discovered_recorded_and_bitwise_identical(servers, tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    prom = _prometheus(servers, targets)
    results, _ = _drive(tmp_path, prom, "none", "all", "plain")
    ports = [int(r["url"].rsplit(":", 1)[1].split("/")[0]) for r in results]
    assert ports[0] != ports[1]
    info = prom.query('last_over_time(slatmon_run_info{run="ddp-test"}[10m])')  # the job has ended
    assert sorted((i["metric"]["rank"], i["metric"]["local_rank"], i["metric"]["world_size"]) for i in info) == [
        ("0", "0", "2"), ("1", "1", "2")]
    assert len({i["metric"]["run_id"] for i in info}) == 1 and info[0]["metric"]["run_id"]  # torchrun's id
    assert list(targets.glob("*.json")) == [], "clean exit removes every rank's target file"
    for rank, r in enumerate(results):
        assert r["record"] == str(tmp_path / "out" / f"run.rank{rank}.sqlite") and Path(r["record"]).is_file()
        (plain_losses, plain_params), (losses, params) = r["plain"], r["watched"]
        assert r["skipped"] == r["plain_skipped"]
        assert torch.equal(torch.tensor(losses), torch.tensor(plain_losses)), f"rank {rank}"
        for name, value in plain_params.items():
            assert _same(params[name], value), f"rank {rank} {name}"
    _series_of_64_ranks(prom.url)
    # DDP really ran: the ranks saw different batches but hold identical parameters
    assert results[0]["watched"][0] != results[1]["watched"][0]
    for name, value in results[0]["watched"][1].items():
        assert _same(results[1]["watched"][1][name], value), name


def _series_of_64_ranks(url: str) -> None:
    """bench/series.py on this 2-rank run: the per-rank count, extrapolated to 64 ranks of the base model."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import series
    finally:
        sys.path.pop(0)
    est = series.measure(url, "ddp-test")
    assert est.ranks_measured == 2 and est.layers == len(series.layer_names("tiny"))
    assert 5 <= est.per_layer <= 10 and est.fixed > 10
    names = series.layer_names("base")
    full, grouped = est.series(64, len(names)), est.series(64, series.grouped_count(names))
    print(f"\n64 ranks x base model ({len(names)} layers): {full} series exporting every layer, {grouped} grouped "
          f"(measured per rank: {est.fixed} fixed + {est.per_layer:.2f} per layer)")
    assert grouped < full


def test_fault_on_rank_1_only_one_alert_and_rank_1_broke_first(servers, tmp_path: Path) -> None:
    prom = _prometheus(servers, tmp_path / "targets", rules=True)
    def one_rank_alert() -> list[dict]:
        firing = [a for a in prom.alerts() if a["state"] == "firing"]
        return firing if any(a["labels"]["alertname"] == "SlatmonNonFiniteFirstOnOneRank" for a in firing) else []

    results, alerts = _drive(tmp_path, prom, "loss-nan", "1", until=one_rank_alert)
    assert [(a["labels"]["alertname"], a["labels"]["run"], a["labels"]["rank"]) for a in alerts] == [
        ("SlatmonNonFiniteFirstOnOneRank", "ddp-test", "1")], "one alert, naming rank 1 only"
    assert alerts[0]["annotations"]["runbook_url"].endswith("/runbooks.md#slatmonnonfinitefirstononerank")
    assert alerts[0]["annotations"]["dashboard_url"].endswith("/?run=ddp-test&rank=1")
    diagnosis = subprocess.run([sys.executable, "-m", "monitor", "diagnose", "--json",
                                *(r["record"] for r in results)], capture_output=True, text=True, timeout=120)
    body = json.loads(diagnosis.stdout)
    assert diagnosis.returncode == 1, diagnosis.stderr
    [first] = [f for f in body["across_ranks"] if f["code"] == "nonfinite_rank_first"]
    assert first["first_step"] == 2 and first["title"].startswith("Rank 1 went non-finite first")
    assert body["first"][0].startswith("rank 1: first non-finite at step 2")
    from_prometheus = subprocess.run([sys.executable, "-m", "monitor", "diagnose", "--json", "--prometheus", prom.url,
                                      "--run", "ddp-test", "--all-ranks"], capture_output=True, text=True, timeout=120)
    body = json.loads(from_prometheus.stdout)
    assert [r["rank"] for r in body["ranks"]] == [0, 1], from_prometheus.stderr
    assert [f["first_step"] for f in body["across_ranks"] if f["code"] == "nonfinite_rank_first"] == [2]


def test_cli_fault_on_all_ranks_is_numerics(tmp_path: Path) -> None:
    out = job("-m", "monitor.example.train", "--steps", "3", "--fault", "loss-nan", "--fault-step", "2",
              "--watch", "--record", "runs/all.sqlite", "--run-name", "ddp-all", "--port", "0", cwd=tmp_path)
    lines = [line for line in out.splitlines() if " step " in line and "loss" in line]
    assert lines and all(line.startswith(("[rank 0] ", "[rank 1] ")) for line in lines)
    assert "[rank 1] run record: runs/all.rank1.sqlite" in out
    records = sorted(str(p) for p in (tmp_path / "runs").glob("all.rank*.sqlite"))
    assert len(records) == 2
    diagnosis = subprocess.run([sys.executable, "-m", "monitor", "diagnose", *records], capture_output=True,
                               text=True, timeout=120)
    assert "slat-monitor diagnose: run 'ddp-all' across 2 ranks" in diagnosis.stdout
    assert "[WARNING] nonfinite_all_ranks: Every rank (0, 1) went non-finite at the same step 2" in diagnosis.stdout
    assert "nonfinite_rank_first" not in diagnosis.stdout


def test_cli_grad_corruption_on_one_rank_is_a_divergence(tmp_path: Path) -> None:
    job("-m", "monitor.example.train", "--steps", "4", "--fault", "grad-corrupt", "--fault-step", "3",
        "--fault-rank", "1", "--watch", "--record", "r.sqlite", "--port", "none", "--quiet", cwd=tmp_path)
    diagnosis = subprocess.run([sys.executable, "-m", "monitor", "diagnose", "--json", "r.rank0.sqlite",
                                "r.rank1.sqlite"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    body = json.loads(diagnosis.stdout)
    [div] = [f for f in body["across_ranks"] if f["code"] == "grad_norm_rank_divergence"]
    assert div["first_step"] == 3 and diagnosis.returncode == 1
