"""`slat-monitor triage`: bad input exits 2 with one line; the real command serves the page on 127.0.0.1,
and a real headless Chromium shows the findings, fixes and snippets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.commands.triage import app_path, streamlit_argv
from monitor.diagnosis import run_rules
from monitor.record import read_record

from .browser import capture, triage_server


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on `port` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.sqlite"], "no run record at 'missing.sqlite'"),
    (["x.sqlite", "--prometheus", "http://127.0.0.1:9090"], "not both"),
    (["--prometheus", "127.0.0.1:9090"], "is not a URL"),
    (["--port", "70000"], "is not a TCP port"),
    (["--lookback", "7d] or vector(1"], "--lookback '7d] or vector(1' is not a PromQL duration"),
    (["--records-dir", "no-such-folder"], "--records-dir 'no-such-folder' is not a folder"),
    (["tests/__init__.py", "--records-dir", "docs"], "the record 'tests/__init__.py' is not under --records-dir"),
])
def test_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["triage", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slat-monitor triage: error: ") and message in err and err.count("\n") == 1


def test_busy_port_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["triage", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_streamlit_command_line() -> None:
    argv = streamlit_argv(app_path(), "127.0.0.1", 8501)
    assert app_path().is_file() and argv[1:4] == ["-m", "streamlit", "run"]
    settings = dict(zip(argv[5::2], argv[6::2]))
    assert settings["--server.address"] == "127.0.0.1" and settings["--server.headless"] == "true"
    assert settings["--browser.gatherUsageStats"] == "false" and settings["--client.showErrorDetails"] == "none"
    assert settings["--server.enableCORS"] == settings["--server.enableXsrfProtection"] == "true"
    hosts = [v for k, v in zip(argv[5::2], argv[6::2]) if k == "--server.allowedHosts"]
    assert hosts == ["localhost", "127.0.0.1", "::1"]
    argv = streamlit_argv(app_path(), "0.0.0.0", 8501, ["box.lan"])
    assert [v for k, v in zip(argv[5::2], argv[6::2]) if k == "--server.allowedHosts"] == [
        "localhost", "127.0.0.1", "::1", "box.lan"]  # a wildcard bind answers only to the names allowed


def test_real_browser_shows_the_diagnosis(records, tmp_path: Path) -> None:
    with triage_server(str(records["eps"]), log=tmp_path / "triage.log") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"127.0.0.1"}
        text = capture(f"{url}/?run=eps-162&rank=0", "parameters became non-finite in the update",
                       tmp_path / "triage.png")
        assert proc.poll() is None
    assert (tmp_path / "triage.png").stat().st_size > 20_000
    assert "2 critical, 1 warning findings over 6 observed steps" in text
    assert "1. AdamW: parameters became non-finite in the update at step 1" in text
    assert "adam_eps_underflow" in text and "Fixes, best first" in text
    top = run_rules(read_record(records["eps"]))[0]  # the open expander: its snippets, as the diagnosis wrote them
    snippets = [fix.snippet for fix in top.fixes if fix.snippet]
    assert snippets and all(line in text for s in snippets for line in s.splitlines() if line.strip())
    assert "First non-finite param at step 1 in blocks.0" in text
    assert "Traceback" not in text and "the link asks for" not in text
