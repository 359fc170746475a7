"""promtool: the example config and the rule files are valid, and every rule's unit tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.ops.alerts import ALERTS, RECORDING

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed: sudo apt-get install prometheus")


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr


def test_check_rules() -> None:
    result = promtool("check", "rules", *sorted(str(p) for p in (PROM / "rules").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert f"SUCCESS: {len(RECORDING)} rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (PROM / "tests").glob("*_test.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_unit_test() -> None:
    """Each alert is asserted to fire somewhere, and each recording rule is queried somewhere."""
    alerted, queried = set(), set()
    for path in (PROM / "tests").glob("*_test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            alerted |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
            queried |= {t["expr"] for t in case.get("promql_expr_test", []) if t["exp_samples"]}
    assert {a.name for a in ALERTS} <= alerted
    assert {r.record for r in RECORDING} <= queried


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the non-finite alert with a wrong threshold must not pass them."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    broken = (PROM / "rules" / "slatmon-alerts.yml").read_text().replace(
        '(slatmon_nonfinite_elements{tensor="param"}) > 0', '(slatmon_nonfinite_elements{tensor="param"}) > 5')
    (tmp_path / "rules" / "slatmon-alerts.yml").write_text(broken)
    shutil.copy(PROM / "tests" / "alerts_test.yml", tmp_path / "tests")
    result = promtool("test", "rules", "tests/alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SlatmonNonFiniteValues" in result.stdout + result.stderr


@pytest.mark.parametrize("cell", ["fp16-amp-skips", "trellis-162"])
def test_check_metrics_on_a_live_scrape(cell: str) -> None:
    """`promtool check metrics` on what a watched run really serves: mid-run, with skipped steps
    (GradScaler) or non-finite values everywhere (TRELLIS #162), findings and every per-layer family."""
    import urllib.request

    from tests.monitor.matrix import Cell, run_cell

    bodies: list[bytes] = []
    spec = {"fp16-amp-skips": Cell("fp16-amp", bad_steps=(2, 3), steps=4),
            "trellis-162": Cell("fp16-pure", eps=1e-8, steps=4)}[cell]
    run_cell(spec, watch=True, port=0, after_step=lambda step, w: bodies.append(urllib.request.urlopen(w.url).read()))
    assert len(bodies) == 4 and b"slatmon_grad_norm_global{" in bodies[-1]
    for body in bodies:
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert result.returncode == 0, (result.stdout + result.stderr).decode()
