"""File-based service discovery files written by monitor.ops.targets."""

from __future__ import annotations

import json

from monitor.ops.targets import register


def test_register_writes_a_file_sd_document_and_remove_is_idempotent(tmp_path) -> None:
    folder = tmp_path / "targets"
    reg = register(folder, "127.0.0.1", 9200, run="my run/1", rank=3)
    assert reg.path.parent == folder and reg.path.name.startswith("my_run_1-3-")
    assert json.loads(reg.path.read_text()) == [
        {"targets": ["127.0.0.1:9200"], "labels": {"run": "my run/1", "rank": "3"}}]
    assert [p.name for p in folder.iterdir()] == [reg.path.name], "no temp file left behind"
    reg.remove()
    reg.remove()
    assert not reg.path.exists()


def test_context_manager_removes_the_file(tmp_path) -> None:
    with register(tmp_path, "127.0.0.1", 1, run="r") as reg:
        assert reg.path.exists()
    assert not reg.path.exists()
