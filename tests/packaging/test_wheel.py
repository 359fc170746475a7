"""The built wheel, installed into a fresh virtual environment and used from outside the checkout.

`monitor` must be the only top-level import name (PyPI has packages named `dashboard` and `grafana`):
dashboard/, grafana/ and trainer_example/ install as monitor.dashboard, monitor.grafana, monitor.example.
The wheel is built from a copy of the working tree (tracked and untracked, not ignored), so the checkout
stays clean. The fresh venv gets the dependencies by a .pth line to this environment's site-packages
(plain path entries: that folder's own .pth files, among them the editable install's finder, do not run),
and the wheel with --no-deps: no download, no second torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .layout import ROOT, package_folders

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _copy_worktree(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_worktree(tmp / "src")
    out = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    assert out.returncode == 0, out.stdout + out.stderr
    (built,) = (tmp / "dist").glob("slat_monitor-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    out = _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    assert out.returncode == 0, out.stderr
    site = Path(_run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=venv.parent).stdout.strip())
    (site / "_slatmon_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    out = _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
               cwd=venv.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


def test_wheel_holds_only_monitor_and_every_source_file(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"monitor", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    expected = set()
    for package, folder in package_folders().items():
        prefix = package.replace(".", "/")
        expected |= {f"{prefix}/{p.name}" for p in folder.glob("*.py")}
    assert expected - set(names) == set()  # every module of every package, at its mapped place
    assert {"monitor/dashboard/app.py", "monitor/example/train.py", "monitor/grafana/rows/layers.py",
            "monitor/py.typed", "monitor/grafana/provisioning/dashboards/slatmon-training-health.json",
            "monitor/grafana/provisioning/alerting/slatmon-alerts.yaml"} <= set(names)


def test_packages_list_matches_the_folders() -> None:
    """pyproject's explicit package list names every folder with an __init__.py (a new subpackage that is
    not listed would silently be left out of the wheel)."""
    folders = package_folders()
    assert all((folder / "__init__.py").is_file() for folder in folders.values()), folders
    roots = [f for p, f in folders.items() if p.count(".") <= 1]
    on_disk = {init.parent for root in roots for init in root.rglob("__init__.py")
               if "__pycache__" not in init.parts}
    assert on_disk == set(folders.values())


CHECK_METADATA = """
import importlib.metadata as md, importlib.util, json, sys
dist = md.distribution("slat-monitor")
tops = sorted({f.parts[0] for f in dist.files if f.suffix == ".py"})
missing = [n for n in ("dashboard", "grafana", "trainer_example") if importlib.util.find_spec(n) is None]
import monitor, monitor.example.train, monitor.grafana.main
from monitor.commands.triage import app_path
print(json.dumps({"top_level": dist.read_text("top_level.txt").split(), "tops": tops, "missing": missing,
                  "dist": str(dist.locate_file("")), "monitor": monitor.__file__,
                  "example": monitor.example.train.__file__, "app": str(app_path()),
                  "app_is_file": app_path().is_file(),
                  "dashboards": sorted(monitor.grafana.main.build_dashboards())}))
"""


def test_installed_wheel_has_one_top_level_name(fresh_venv: Path, tmp_path: Path) -> None:
    import json

    out = _run([str(fresh_venv / "bin/python"), "-c", CHECK_METADATA], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["top_level"] == ["monitor"] and info["tops"] == ["monitor"]
    assert info["missing"] == ["dashboard", "grafana", "trainer_example"]  # nothing else importable
    site = info["dist"]
    assert site.startswith(str(fresh_venv)), info
    for key in ("monitor", "example", "app"):  # imported from the wheel, not from the checkout
        assert info[key].startswith(site) and not info[key].startswith(str(ROOT)), (key, info)
    assert info["app"].endswith("monitor/dashboard/app.py") and info["app_is_file"]
    assert info["dashboards"] == ["slatmon-training-health"]


def test_commands_run_from_outside_the_checkout(fresh_venv: Path, tmp_path: Path) -> None:
    out = _run([str(fresh_venv / "bin/slat-monitor"), "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(cmd in out.stdout for cmd in ("demo", "diagnose", "stack", "grafana", "triage"))
    out = _run([str(fresh_venv / "bin/python"), "-m", "monitor.example.train", "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "python -m monitor.example.train" in out.stdout and "--precision" in out.stdout
    out = _run([str(fresh_venv / "bin/python"), "-m", "monitor.example", "--help"], cwd=tmp_path)
    assert out.returncode == 0 and "--fault" in out.stdout, out.stderr
