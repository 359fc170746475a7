"""The triage page on runs that used to look healthy: not green, the critical finding first."""

from __future__ import annotations

import pytest

import monitor
from monitor.dashboard.mdtext import escape
from tests.monitor.faults import NEVER_HEALTHY, fault_record


@pytest.mark.parametrize("name", sorted(NEVER_HEALTHY))
def test_page_is_not_green(app_page, tmp_path, name: str) -> None:
    path, _ = fault_record(name, tmp_path)
    top = monitor.diagnose(str(path))[0]
    at = app_page(query={"record": str(path)})
    assert not at.success and at.error and at.error[0].value.startswith("1 critical")
    assert escape(top.title) in at.expander[0].label  # titles name tensors as passed: args[0] is escaped
