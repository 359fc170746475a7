"""The page reading a real Prometheus that scraped a real watched run, opened the way alert annotations
link to it: `?run=R&rank=K` on a page configured with SLATMON_PROMETHEUS."""

from __future__ import annotations

import pytest

from monitor.ops.alerts import TRIAGE_LINK
from tests.models import prometheus_with_run

from .runs import plain

RUN = "dash-prom-162"
STEPS = 3


@pytest.fixture(scope="module")
def prom(module_servers, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a real Prometheus (1 s scrapes) that saw every step of a TRELLIS #162 run."""
    return prometheus_with_run(module_servers, tmp_path_factory.mktemp("targets"), RUN, name="dash-prom",
                               steps=STEPS, lr=1e-3)


def test_alert_link_opens_the_run(app_page, prom: str) -> None:
    link = TRIAGE_LINK.replace("{triage}", "http://127.0.0.1:8501")
    assert link.startswith("http://127.0.0.1:8501/?run=") and "&rank=" in link  # the params the page reads
    at = app_page(query={"run": RUN, "rank": "0"}, env={"SLATMON_PROMETHEUS": prom})
    assert at.radio(key="kind").value == "prometheus"
    assert at.selectbox(key="run_pick").value == RUN and at.selectbox(key="rank_pick").value == 0
    assert f"{RUN} - critical" in at.selectbox(key="run_pick").options
    assert at.error[0].value.startswith("2 critical")
    assert "AdamW: parameters became non-finite in the update at step 1" in at.expander[0].label
    assert any("eps=0.0001" in c.value for c in at.code)
    assert any(f"Source: Prometheus {prom} run {RUN} rank 0" in plain(c.value) for c in at.caption)
    # the layer-info series changed labels at step 1 (state_dtype none -> float16): the last one counts
    assert "**optimizer state dtypes:** float16 x2, float32 x2" in "\n".join(plain(m.value) for m in at.markdown)


def test_unknown_run_in_link(app_page, prom: str) -> None:
    at = app_page(query={"run": "gone", "rank": "0"}, env={"SLATMON_PROMETHEUS": prom})
    error = plain(at.error[0].value)
    assert len(at.error) == 1 and error.startswith(f"run 'gone' not found in Prometheus at {prom}")
    assert RUN in error and not at.expander


@pytest.fixture(scope="module")
def two_runs(module_servers, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Prometheus holding a healthy fp32 run and, named so it sorts after it, a #162 run."""
    import torch

    from tests.models import scraping_prometheus, watched_run

    url, waiter, release = scraping_prometheus(module_servers, tmp_path_factory.mktemp("targets"),
                                               name="dash-two-runs")
    watched_run(None, run="a-healthy", dtype=torch.float32, steps=2, port=0, between=waiter("a-healthy"))
    watched_run(None, run="b-broken", steps=2, port=0, between=waiter("b-broken"))
    release()
    return url


def test_several_runs_are_listed_with_status_and_the_worst_is_preselected(app_page, two_runs: str) -> None:
    at = app_page(env={"SLATMON_PROMETHEUS": two_runs})
    pick = at.selectbox(key="run_pick")
    assert pick.value == "b-broken" and pick.options == ["b-broken - critical", "a-healthy - healthy"]
    assert any("2 runs in Prometheus, worst first: b-broken (critical), a-healthy (healthy)"
               in plain(c.value) for c in at.caption)
    assert at.error and at.error[0].value.startswith("2 critical")
