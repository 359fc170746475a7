"""In a checkout (pytest's `pythonpath = ["."]` plus the editable install of scripts/setup.sh) every
package of the distribution imports from its folder here: monitor/ by the path entry, the mapped
monitor.dashboard / monitor.grafana / monitor.example by setuptools' editable finder."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

from .layout import ROOT, package_folders


@pytest.mark.parametrize("package", sorted(package_folders()))
def test_each_package_imports_from_its_folder(package: str) -> None:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin == str(package_folders()[package] / "__init__.py")


def test_the_old_top_level_names_are_gone(tmp_path) -> None:
    """Outside the checkout's root folder, `dashboard`, `grafana` and `trainer_example` do not import: the
    editable install exposes only `monitor` (the root folder itself is on sys.path only under pytest)."""
    code = ("import importlib.util, sys; "
            "print([n for n in ('dashboard', 'grafana', 'trainer_example', 'monitor.example') "
            "if importlib.util.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['monitor.example']"
    assert importlib.import_module("monitor.example").__file__ == str(ROOT / "trainer_example" / "__init__.py")
