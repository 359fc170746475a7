"""The triage page under hostile input, in a real browser: layer names, a run name and event texts from a
record, query parameters (`?record=`, `?run=`, `?prometheus=`, `?lookback=`) and a Prometheus reply that
carry Markdown links, HTML, scripts, `javascript:` links, images, formulas and line breaks. The DOM must
hold no link, image, script or event handler that came from them, no dialog may open, and each hostile
string must be shown literally. Also: a page opened through a foreign Host name (DNS rebinding) gets no
data, and the AppTest cases of the records folder, the fixed Prometheus and the lookback.

One `slat-monitor triage` server and one Chromium serve every browser case (each page load costs seconds).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import torch

from monitor.dashboard.access import allowed_hosts, host_problem, inside
from tests.dashboard.browser import CHROMIUM, CHROMIUM_ARGS, triage_server
from tests.dashboard.conftest import page_runner
from tests.dashboard.runs import plain

from .hostile_inputs import DETAIL, LAYERS, QUERY_RUN, REPLY, RUN, XSS, HostilePrometheus, hostile_record
from .page_checks import assert_inert, bare_streamlit, handshake, hover_tooltip, open_page

# -- one server, one browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, records folder) of `slat-monitor triage --records-dir DIR --prometheus HOSTILE` on a
    free 127.0.0.1 port; DIR holds hostile.sqlite."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hostile")
    records = root / "records"
    records.mkdir()
    hostile_record(records / "hostile.sqlite")
    prometheus = HostilePrometheus()
    try:
        with triage_server("--records-dir", str(records), "--prometheus", prometheus.url,
                           log=root / "triage.log") as (url, _):
            yield url, records
    finally:
        prometheus.close()


@pytest.fixture(scope="module")
def browser(served) -> Iterator[Any]:
    """A Chromium page (1400 x 1800) that resolves evil.example to 127.0.0.1, as a DNS-rebinding site would;
    `.dialogs` collects every alert/confirm/prompt opened (there must be none)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM,
                                     args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1800})
            page.dialogs = []
            page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
            yield page
        finally:
            chromium.close()


def test_hostile_record_and_run_link_render_as_text(served, browser) -> None:
    url, _ = served
    query = urlencode({"record": "hostile.sqlite", "run": QUERY_RUN, "rank": "0"})
    text = open_page(browser, f"{url}/?{query}", "Events")
    assert_inert(browser)
    shown = " ".join(text.split())  # a newline inside a layer name may wrap either way
    for layer in LAYERS:
        assert " ".join(layer.split()) in shown, layer
    for hostile in (RUN, QUERY_RUN, DETAIL):
        assert hostile in shown, hostile
    assert "2 critical" in text and "Layers: dtypes and optimizer state (7)" in text
    # A chart's tooltip: the NaN band of the per-layer grad-norm chart names the layers (Vega escapes them).
    tip = hover_tooltip(browser, browser.locator("[data-testid=stVegaLiteChart]").nth(4))
    assert LAYERS[1] in tip.inner_text() and "<script" not in tip.inner_html().lower()
    assert tip.evaluate("t => t.querySelectorAll('script, img, a, iframe').length") == 0


def test_hostile_query_parameters_are_refused_as_text(served, browser) -> None:
    url, records = served
    query = urlencode({"record": f"../{XSS}", "prometheus": f"http://evil.example/{XSS}", "lookback": XSS})
    text = open_page(browser, f"{url}/?{query}", "refused")
    assert_inert(browser)
    assert f"not 'http://evil.example/{XSS}'" in text
    assert f"lookback '{XSS}' is not a PromQL duration" in text
    assert f"this page opens run records under {records} only, and '../{XSS}' is not there" in text
    assert "Findings" not in text


def test_hostile_prometheus_reply_renders_as_text(served, browser) -> None:
    url, _ = served
    text = open_page(browser, f"{url}/?{urlencode({'run': QUERY_RUN})}", "answered HTTP 400")
    assert_inert(browser)
    assert REPLY in text and "Findings" not in text


def test_dns_rebinding_page_gets_no_data(served, browser) -> None:
    """The browser resolves evil.example to 127.0.0.1 (what a rebinding attack arranges): Streamlit refuses
    the page's WebSocket (server.allowedHosts), so no script run sends anything."""
    url, _ = served
    port = url.rsplit(":", 1)[1]
    browser.goto(f"http://evil.example:{port}/?record=hostile.sqlite", timeout=60_000)
    browser.wait_for_timeout(4000)  # time for a connection, a script run and its output on this machine
    text = browser.inner_text("body")
    assert "slat-monitor triage" not in text and "hostile" not in text and "Findings" not in text
    assert_inert(browser)


def test_the_page_checks_the_host_itself_under_a_bare_streamlit_run(served, browser, tmp_path: Path) -> None:
    """`streamlit run dashboard/app.py` by hand sets no `server.allowedHosts`: Streamlit accepts the
    rebinding page's WebSocket, and the page's own check (st.context.headers) must refuse it before
    reading the record the link names."""
    _, records = served
    with bare_streamlit({"SLATMON_RECORDS_DIR": str(records)}, tmp_path / "bare.log") as url:
        port = url.rsplit(":", 1)[1]
        text = open_page(browser, f"http://evil.example:{port}/?record=hostile.sqlite", "slat-monitor triage")
    assert f"refused: this page was opened as 'evil.example:{port}', a name it does not answer to" in text
    assert "Findings" not in text and "Source" not in text and "hostile" not in text
    assert_inert(browser)


def test_foreign_host_header_is_refused_by_the_server(served) -> None:
    port = int(served[0].rsplit(":", 1)[1])
    assert " 101 " in handshake(port, f"127.0.0.1:{port}")
    assert " 101 " in handshake(port, f"localhost:{port}")
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "evil.example"):
        assert " 403 " in handshake(port, host), host


# -- the limits, through AppTest (no browser) --------------------------------------------------------------


@pytest.fixture
def app_page(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """`app_page(query=, env=)` -> the AppTest of the page after its first run, SLATMON_* cleared first."""
    return page_runner(monkeypatch)  # no records folder: the tests give SLATMON_RECORDS_DIR where they need one


@pytest.fixture
def limited(app_page, tmp_path: Path) -> tuple[Any, Path, Path]:
    """(app_page, records folder, a folder outside it holding secret.sqlite) with SLATMON_RECORDS_DIR set."""
    inner, outer = tmp_path / "records", tmp_path / "outside"
    inner.mkdir()
    outer.mkdir()
    (outer / "secret.sqlite").write_bytes(b"SQLite format 3\x00")
    (inner / "link.sqlite").symlink_to(outer / "secret.sqlite")
    (inner / "folder.sqlite").mkdir()
    return app_page, inner, outer


def _errors(at: Any) -> list[str]:
    return [plain(e.value) for e in at.error]


def test_records_outside_the_folder_are_refused_alike(limited) -> None:
    app_page, inner, outer = limited
    env = {"SLATMON_RECORDS_DIR": str(inner)}
    words = []
    for asked in (str(outer / "secret.sqlite"), str(outer / "missing.sqlite"), "../outside/secret.sqlite",
                  "../outside/missing.sqlite", "link.sqlite", "/etc/passwd", "/nonexistent/x", "a\x00.sqlite"):
        at = app_page(query={"record": asked}, env=env)
        (error,) = _errors(at)
        assert error == (f"refused: this page opens run records under {inner.resolve()} only, and {asked!r} is not "
                         "there (start it with slat-monitor triage --records-dir DIR to open another folder)"), asked
        words.append(error.replace(repr(asked), "PATH"))
        assert not at.expander and not at.metric
    assert len(set(words)) == 1  # an existing and a missing file outside read the same: no oracle
    at = app_page(query={"record": "folder.sqlite"}, env=env)
    assert _errors(at) == ["'folder.sqlite' is not a run record (not a regular file)"]
    # the sidebar is held to the same folder
    at = app_page(env=env)
    at.text_input(key="record").input(str(outer / "secret.sqlite")).run()
    assert _errors(at)[0].startswith("refused: this page opens run records under")


def test_a_damaged_record_is_one_escaped_message(app_page, served, tmp_path: Path) -> None:
    """A record cut in half (named like a link) and one whose event detail is not JSON: one error box
    each, no traceback, nothing else drawn; the link-like name is shown literally, escaped."""
    whole = (served[1] / "hostile.sqlite").read_bytes()
    linky = "[x](javascript:alert(1))"
    (tmp_path / f"{linky}.sqlite").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "events.sqlite").write_bytes(whole)
    with sqlite3.connect(tmp_path / "events.sqlite") as conn:
        conn.execute("UPDATE slatmon_events SET detail = '{not json'")
    shown = {}
    cases = ((f"{linky}.sqlite", "is not a slat-monitor run record"), ("events.sqlite", "is a damaged run record"))
    for name, words in cases:
        at = app_page(query={"record": name}, env={"SLATMON_RECORDS_DIR": str(tmp_path)})
        (error,) = at.error
        shown[name] = error.value
        assert words in plain(error.value) and not at.expander and not at.metric and not at.dataframe, name
    raw = shown[f"{linky}.sqlite"]
    assert linky in plain(raw) and "[x](" not in raw and "\\[x\\]" in raw  # literal, escaped


def test_only_the_start_up_prometheus_and_valid_lookbacks(app_page) -> None:
    at = app_page(query={"prometheus": "http://127.0.0.1:1/"})
    assert _errors(at) == ["refused: this page reads only the one given at start (slat-monitor triage "
                           "--prometheus URL), and none was; not 'http://127.0.0.1:1/'"]
    at = app_page(query={"source": "http://169.254.169.254/latest"}, env={"SLATMON_PROMETHEUS": "http://127.0.0.1:1"})
    assert _errors(at)[0].startswith("refused: this page reads only the one it was started with, "
                                     "http://127.0.0.1:1; not 'http://169.254.169.254/latest'")
    at = app_page(env={"SLATMON_PROMETHEUS": "http://127.0.0.1:1"})  # the sidebar shows it, fixed
    field = at.text_input(key="prometheus")
    assert field.value == "http://127.0.0.1:1" and field.disabled
    at.text_input(key="lookback").input("7d] or vector(1").run()  # typed into the sidebar
    assert _errors(at)[0].startswith("lookback '7d] or vector(1' is not a PromQL duration")
    for lookback in ("7d] or vector(1", "1h;", "", "d7", "1.5h"):
        at = app_page(query={"lookback": lookback or " "}, env={"SLATMON_PROMETHEUS": "http://127.0.0.1:1"})
        assert _errors(at)[0].startswith(f"lookback {(lookback or ' ')!r} is not a PromQL duration"), lookback


def test_diagnose_refuses_a_lookback_that_is_not_a_duration(capsys) -> None:
    from monitor.cli import main

    assert main(["diagnose", "--prometheus", "http://127.0.0.1:1", "--lookback", "7d]) or vector(1"]) == 2
    err = capsys.readouterr().err  # refused before any request (nothing listens on port 1)
    assert err == ("slat-monitor diagnose: error: lookback '7d]) or vector(1' is not a PromQL duration: expected a "
                   "number and a unit (ms, s, m, h, d, w, y), e.g. 7d, 2h or 1h30m\n")


def test_host_names_and_rank_siblings() -> None:
    allowed = allowed_hosts((), "127.0.0.1")
    assert host_problem({}, allowed) is None  # no HTTP request at all (AppTest): nothing to check
    for host in ("127.0.0.1:8501", "localhost:8501", "[::1]:8501", "LOCALHOST.", "localhost"):
        assert host_problem({"Host": host}, allowed) is None, host
    for host in ("evil.example:8501", "localhost.evil.example", "127.0.0.1@evil.example", "", "[::1", "a:b:c"):
        assert host_problem({"Host": host}, allowed), host
    assert host_problem({"Origin": "http://127.0.0.1"}, allowed)  # a request without Host
    assert host_problem({"host": "box.lan:8501"}, allowed_hosts(["localhost", "*.lan"], None)) is None
    assert host_problem({"host": "evil.example"}, allowed_hosts(["*"], None)) is None


def test_rank_siblings_stay_inside_the_folder(tmp_path: Path) -> None:
    inner = tmp_path / "runs"
    inner.mkdir()
    (tmp_path / "a.rank1.sqlite").write_bytes(b"x")
    (inner / "a.rank0.sqlite").write_bytes(b"x")
    (inner / "a.rank1.sqlite").symlink_to(tmp_path / "a.rank1.sqlite")
    assert inside(inner / "a.rank0.sqlite", inner.resolve()) == (inner / "a.rank0.sqlite").resolve()
    assert inside(inner / "a.rank1.sqlite", inner.resolve()) is None
    assert inside("../a.rank1.sqlite", inner.resolve()) is None


def test_the_page_never_passes_raw_html() -> None:
    """No Streamlit call that renders HTML exists in the page's code (the checks above cover what runs)."""
    from monitor.commands.triage import app_path

    for source in app_path().parent.glob("*.py"):
        code = source.read_text()
        for call in ("unsafe_allow_html", "st.html(", "components.html", "st.write(", "st.table("):
            assert call not in code, (source.name, call)
