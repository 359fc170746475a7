"""Every shell command of README.md, pasted in order into one shell session in a clean clone, works.

What runs: every line of every ```bash / ```sh / ```shell block (continuation lines joined; comment-only
lines left out), in README order, each in `bash` with the previous commands' exported environment (so
`source .venv/bin/activate` and `export` carry on, as in a terminal). What is adapted is listed in
ADAPTED (smaller step counts, free ports instead of 9090/9093/8501, Grafana's URL replaced by the
protocol fake of tests/ops/fake_grafana.py) and what is not run is listed in SKIPPED, each with its
reason. Both lists must match the README exactly: a new README command runs unless it is listed, and a
listed command that left the README fails the test. Servers (`slat-monitor stack`, `triage`) run in
the background until the end, are checked while up, then get Ctrl-C (SIGINT) and must exit 0.

The clone is `git clone` of this checkout's HEAD (commit first to test a change). Its `.venv` is
created before the README's first command with one .pth line to this environment's site-packages, so
scripts/setup.sh finds torch and the other dependencies installed (no multi-GB download) and installs
only the clone itself, editable; the .pth files of that folder (this checkout's editable finder) do not
run in the clone's interpreter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ops.fake_grafana import FakeGrafana
from tests.realservers import free_port

from .layout import ROOT

pytestmark = pytest.mark.slow

SHELL_FENCES = {"bash", "sh", "shell"}
OTHER_FENCES = {"python", "text"}  # code and sample output, not commands
TOKEN = "glsa_readme_test"

# README command -> why it is not run here.
BENCH = "a benchmark (minutes of timing on a quiet machine); tests/bench runs each one on tiny sizes"
SKIPPED = {
    "bash scripts/test.sh": "the test command itself: the whole suite, this test included",
    "OMP_NUM_THREADS=1 python -m bench.overhead --steps 30": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.sampler_ab --ref 3cc3f2e --workload transformer": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.profile_step --workload transformer": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.export_cost": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.scale_ab --ref 0c7893b": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.record_cost --ref 0c7893b": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.detection": BENCH,
    "OMP_NUM_THREADS=1 python -m bench.lead_time --seeds 5": BENCH,
    "bash bench/gpu.sh": "needs CUDA; tests/bench runs its --device cpu smoke",
    "python bench/guard.py --steps 20 --rounds 5": BENCH,
    ".venv/bin/python -m pytest tests/monitor": "a test command: one area of the suite",
    ".venv/bin/python ../shared/checks/contract.py": "../shared is the project's folder beside the checkout; "
                                                      "a clone has none (scripts/test.sh runs it when present)",
}


@dataclass(frozen=True)
class Adapted:
    """How one README command runs here. `replace`: (README text, what runs) pairs, `{name}` filled from
    the session's ports and URLs; `status`: the expected exit status; `ready`: for a server, the text its
    output shows once it is up (it then runs in the background until the end)."""

    replace: tuple[tuple[str, str], ...] = ()
    status: int = 0
    ready: str | None = None


ADAPTED = {
    "bash scripts/demo.sh": Adapted((("demo.sh", "demo.sh --steps 3"),)),
    "python -m monitor.example.train --config tiny --precision fp16-naive --fault eps-underflow --steps 50 \\\n"
    "    --watch --record runs/a.sqlite --port 0": Adapted((("--steps 50", "--steps 3"),)),
    "slat-monitor diagnose runs/a.sqlite": Adapted(status=1),  # critical: adam_eps_underflow
    "slat-monitor demo --eps 1e-4": Adapted((("1e-4", "1e-4 --steps 3"),)),
    "slat-monitor demo --verbose": Adapted((("--verbose", "--verbose --steps 3"),)),
    "slat-monitor stack --dir .stack": Adapted(
        (("--dir .stack", "--dir .stack --prometheus-port {prometheus} --alertmanager-port {alertmanager}"),),
        ready="Ctrl-C stops the stack"),
    "export GRAFANA_TOKEN=glsa_...": Adapted((("glsa_...", TOKEN),)),
    "slat-monitor grafana push --url https://grafana.example.com --prometheus-url http://prometheus:9090": Adapted(
        (("https://grafana.example.com", "{grafana}"),)),
    "slat-monitor triage runs/a.sqlite": Adapted((("runs/a.sqlite", "runs/a.sqlite --port {triage}"),),
                                                 ready="You can now view"),
    # the clone's venv shares the checkout's site-packages but has no console scripts of its own
    "torchrun --nproc_per_node 2 -m monitor.example.train --watch --record runs/ddp.sqlite \\\n"
    "    --fault loss-nan --fault-step 10 --fault-rank 1 --run-name ddp-demo --port none": Adapted(
        (("torchrun", "python -m torch.distributed.run --standalone"),)),
    "slat-monitor diagnose runs/ddp.rank0.sqlite runs/ddp.rank1.sqlite": Adapted(status=1),  # rank 1 broke first
}


def without_comment(line: str) -> str:
    """The command of a README line: the text before a ` # comment` (how the lists name commands)."""
    return re.split(r"\s+#(?:\s|$)", line, maxsplit=1)[0].rstrip()


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(section heading, command without its comment) for every command of the README's shell blocks."""
    commands, section, fence, lines = [], "", None, iter(text.splitlines())
    for line in lines:
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif line.startswith("```"):
                fence = line[3:].strip()
                assert fence in SHELL_FENCES | OTHER_FENCES, f"README block fenced as {fence!r}: name its language"
            continue
        if line.startswith("```"):
            fence = None
            continue
        if fence not in SHELL_FENCES or not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line += "\n" + next(lines)
        commands.append((section, without_comment(line)))
    return commands


@dataclass
class Ran:
    command: str
    ran: str
    status: int
    output: str


class Session:
    """One shell session in `clone`: each command runs in bash with the environment the previous ones
    exported (kept in a file between commands)."""

    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.clone, self.env = clone, env
        self.state = clone.parent / "session.env"
        self.state.write_text("")
        self.servers: list[tuple[str, subprocess.Popen, Path]] = []

    def run(self, command: str, timeout: float = 900) -> tuple[int, str]:
        script = f'source "{self.state}"\n{command}\nstatus=$?\nexport -p > "{self.state}"\nexit $status\n'
        out = subprocess.run(["bash", "-c", script], cwd=self.clone, env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        return out.returncode, out.stdout + out.stderr

    def start(self, command: str, ready: str, timeout: float = 180) -> str:
        """Start a server command in the background; return its output once it shows `ready`."""
        log = self.clone.parent / f"server{len(self.servers)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-c", f'source "{self.state}"\nexec {command}'], cwd=self.clone,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.servers.append((command, proc, log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if ready in text:
                return text
            if proc.poll() is not None:
                raise AssertionError(f"{command!r} exited with {proc.returncode} before it was up:\n{text}")
            time.sleep(0.3)
        raise AssertionError(f"{command!r} not up after {timeout} s:\n{log.read_text(errors='replace')}")

    def stop_servers(self) -> list[Ran]:
        """Ctrl-C every server, newest first; their exit status and output."""
        stopped = []
        for command, proc, log in reversed(self.servers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                status = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            stopped.append(Ran(command, command, status, log.read_text(errors="replace")))
        return stopped


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode(errors="replace")


def check_server(command: str, output: str, values: dict[str, str]) -> None:
    """While up: every link the stack prints answers 200; the triage page answers its health check."""
    if command.startswith("slat-monitor stack"):
        links = re.findall(r"http://[^\s()\"]+", output)
        assert any(u.endswith("/alerts") for u in links), output
        for url in links:
            assert _get(url.replace("/#/", "/"))[0] == 200, url
        assert "delivers alerts nowhere" in output
    if command.startswith("slat-monitor triage"):
        assert _get(f"http://127.0.0.1:{values['triage']}/_stcore/health") == (200, "ok")


def _session_env() -> dict[str, str]:
    """The caller's environment without any virtual environment or checkout on the paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(str(ROOT)) and not p.endswith(".venv/bin"))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _clone(tmp: Path) -> Path:
    clone = tmp / "clone"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", head], cwd=clone, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True)
    site = subprocess.run([str(clone / ".venv/bin/python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_slatmon_readme_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return clone


@pytest.fixture(scope="module")
def readme_session(tmp_path_factory: pytest.TempPathFactory):
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    tmp = tmp_path_factory.mktemp("readme")
    clone = _clone(tmp)
    grafana = FakeGrafana(TOKEN)
    values = {"prometheus": str(free_port()), "alertmanager": str(free_port()), "triage": str(free_port()),
              "grafana": grafana.url}
    session = Session(clone, _session_env())
    results: list[Ran] = []
    try:
        for _section, command in commands:
            if command in SKIPPED:
                continue
            how = ADAPTED.get(command, Adapted())
            ran = command
            for old, new in how.replace:
                assert old in ran, (command, old)
                ran = ran.replace(old, new.format(**values), 1)
            if how.ready:
                output = session.start(ran, how.ready)
                check_server(ran, output, values)
                results.append(Ran(command, ran, 0, output))
            else:
                status, output = session.run(ran)
                results.append(Ran(command, ran, status, output))
                if status != how.status:
                    break  # the rest depends on it; the test reports this one
        stopped = session.stop_servers()
        yield {"commands": commands, "results": results, "stopped": stopped, "clone": clone,
               "session": session, "grafana": grafana}
    finally:
        session.stop_servers()
        grafana.close()


def test_the_lists_match_the_readme() -> None:
    commands = [c for _, c in readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert set(SKIPPED) <= set(commands), set(SKIPPED) - set(commands)
    assert set(ADAPTED) <= set(commands), set(ADAPTED) - set(commands)
    assert not set(SKIPPED) & set(ADAPTED)
    usage = [c for c in commands if c not in SKIPPED or SKIPPED[c] != BENCH]
    assert len(usage) - len(set(SKIPPED) & set(usage)) >= 3 * len(set(SKIPPED) & set(usage))  # skips: the exception


def test_every_readme_command_runs_in_a_clean_clone(readme_session) -> None:
    results, commands = readme_session["results"], readme_session["commands"]
    for r in results:
        expected = ADAPTED.get(r.command, Adapted()).status
        assert r.status == expected, f"{r.ran!r}: exit status {r.status}, expected {expected}:\n{r.output[-3000:]}"
    to_run = [c for _, c in commands if c not in SKIPPED]
    assert [r.command for r in results] == to_run  # every command ran, in README order
    sections = {s for s, c in commands if c not in SKIPPED}
    # the Benchmarks section's commands are timing runs, covered at tiny sizes by tests/bench (SKIPPED)
    assert {"Quickstart", "The SLAT VAE example (`trainer_example/`, installed as `monitor.example`)",
            "Dashboards and alerts (Prometheus, Alertmanager, Grafana)", "Many GPUs, many nodes",
            "Triage page"} <= sections
    for stopped in readme_session["stopped"]:
        assert stopped.status == 0, f"{stopped.command!r} after Ctrl-C: {stopped.status}\n{stopped.output[-2000:]}"


def test_what_the_commands_did(readme_session) -> None:
    """The commands did their job, beyond exit status 0."""
    by_command = {r.command: r for r in readme_session["results"]}
    clone = readme_session["clone"]
    assert "adam_eps_underflow" in by_command["slat-monitor diagnose runs/a.sqlite"].output
    assert "--fault" in by_command["python -m monitor.example.train --help"].output
    assert any(r.path.startswith("/api/dashboards") for r in readme_session["grafana"].requests)
    records = sorted(p.name for p in (clone / "runs").iterdir())
    assert "a.sqlite" in records and not [n for n in records if n.endswith(("-wal", "-shm"))], records
    stack = next(s for s in readme_session["stopped"] if s.command.startswith("slat-monitor stack"))
    assert "slat-monitor stack: stopped" in stack.output


def test_setup_rerun_skips_pip(readme_session) -> None:
    """After the quickstart installed .venv, scripts/setup.sh again is quick: no pip install."""
    status, output = readme_session["session"].run("bash scripts/setup.sh", timeout=300)
    assert status == 0, output
    assert "setup: .venv is up to date" in output and "setup: ready" in output, output
    assert re.fullmatch(r"[0-9a-f]{16}\n", (readme_session["clone"] / ".venv/.slatmon-setup").read_text())
