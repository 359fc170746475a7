"""The distribution's package layout, read from pyproject.toml: import name -> source folder in the checkout.

`[tool.setuptools] packages` lists every package; `[tool.setuptools.package-dir]` maps monitor.dashboard,
monitor.grafana and monitor.example to the top-level folders dashboard/, grafana/, trainer_example/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders() -> dict[str, Path]:
    """Every package of the distribution -> its folder in the checkout (package-dir applied)."""
    config = setuptools_config()
    mapping = config.get("package-dir", {})
    folders = {}
    for name in config["packages"]:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest mapped prefix wins, as in setuptools
            prefix = ".".join(parts[:cut])
            if prefix in mapping:
                folders[name] = ROOT / mapping[prefix] / Path(*parts[cut:])
                break
        else:
            folders[name] = ROOT / Path(*parts)
    return folders


def module_files() -> dict[str, Path]:
    """Every module of the distribution (packages as their __init__) -> its source file in the checkout."""
    modules = {}
    for package, folder in package_folders().items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules
