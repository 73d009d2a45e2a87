"""``make demo`` and ``make run`` as a user runs them: real processes, talked to over HTTP, stopped by signals.

What a new user relies on: the demo runs the whole story and exits 0; ``make run`` leaves
a distribution service and two edges that trust each other with a signed bundle ready,
Ctrl-C (or SIGTERM) stops every process it started with exit 0, and running it again on
the same directory works.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from devstack import fleet_app
from tests.edge_setup import http

ROOT = Path(__file__).resolve().parent.parent
V1 = "/distribution/api/v1"
# Hang guards, not speed checks: the demo takes seconds, a first start makes a GnuPG key.
DEMO_TIMEOUT = 240.0
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "DISTRIBUTION_"))}
    return env | {"PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may hold spaces: the parent pid is the 2nd field after it
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_make_demo_runs_the_whole_story_and_exits_0(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.demo", "--run-dir", str(tmp_path / "demo")],
        cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the demo stops its services on SIGTERM
        out, _ = proc.communicate(timeout=STOP_TIMEOUT)
        pytest.fail(f"the demo did not finish within {DEMO_TIMEOUT:.0f} s:\n{out}")
    assert proc.returncode == 0, out
    assert "✗" not in out, out
    for number, words in [
        (1, "start the distribution service and 2 edges"),
        (2, "distribute demo 1.0.0 to edge-1 and edge-2"),
        (3, "download every file from edge-1 and edge-2, sha256 equal to the source"),
        (4, "status over REST is Completed on every edge"),
        (5, "`distribution status demo 1.0.0` shows Completed per edge"),
        (6, "undistribute demo 1.0.0"),
        (7, "the files and the bundle are gone from edge-1 and edge-2"),
    ]:
        assert re.search(rf"^✓ {number}\. {re.escape(words)}", out, re.MULTILINE), (number, out)
    assert out.rstrip().endswith("All steps passed."), out


@dataclass
class RunningStack:
    """A ``python -m devstack.run`` process and what it printed."""

    proc: subprocess.Popen[str]
    reader: threading.Thread
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def read_until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {marker!r} within {timeout:.0f} s:\n{self.text}")
            if line is None:
                pytest.fail(f"devstack.run ended (status {self.proc.wait()}) before {marker!r}:\n{self.text}")
            self.output.append(line)
            if marker in line:
                return self.text

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"devstack.run did not stop within {STOP_TIMEOUT:.0f} s after {sig.name}:\n{self.text}")
        while (line := self.lines.get(timeout=STOP_TIMEOUT)) is not None:
            self.output.append(line)
        return code

    def banner(self) -> dict[str, Any]:
        """URLs and tokens as printed."""
        text = self.text
        dist = re.search(r"Distribution service\s+(http://\S+)\s+admin token\s+(\S+)", text)
        edges = re.findall(r"Edge (edge-\d)\s+(http://\S+)/artifactory/.*\n\s+admin token\s+(\S+)", text)
        assert dist and len(edges) == 2, text
        return {"url": dist[1], "token": dist[2], "edges": {n: (u, t) for n, u, t in edges}}


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    with stream:
        for line in stream:
            lines.put(line)
    lines.put(None)


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningStack] = []

    def start(run_dir: Path) -> RunningStack:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.run", "--run-dir", str(run_dir),
             "--distribution-port", "0", "--edge-port", "0", "--edge-port", "0"],
            cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        stack = RunningStack(proc, reader, lines)
        started.append(stack)
        stack.read_until("Ctrl-C stops everything.", READY_TIMEOUT)
        return stack

    yield start
    for stack in started:  # a failed test still stops what it started
        if stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGTERM)
            try:
                stack.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stack.proc.kill()
                stack.proc.wait()
        stack.reader.join(STOP_TIMEOUT)  # it closes the pipe at its end


def check_trusted_and_registered(banner: dict[str, Any]) -> None:
    """Every edge is registered, healthy, and trusts the service's signing key; the demo bundle is signed."""
    url, token = banner["url"], banner["token"]
    status, registered = http("GET", url + V1 + "/edges", token)
    assert status == 200, registered
    assert {e["name"]: (e["url"], e["healthy"]) for e in registered} == {
        name: (edge_url, True) for name, (edge_url, _) in banner["edges"].items()
    }
    status, keys = http("GET", url + V1 + "/keys/gpg", token)
    assert status == 200, keys
    fingerprint = next(k["fingerprint"] for k in keys["keys"] if k["default"])
    for edge_url, edge_token in banner["edges"].values():
        status, trusted = http("GET", edge_url + "/artifactory/api/security/keys/trusted", edge_token)
        assert status == 200, trusted
        assert fingerprint in {k["fingerprint"] for k in trusted["keys"]}
    status, bundle = http("GET", url + V1 + "/release_bundle/demo/1.0.0", token)
    assert status == 200 and bundle["state"] == "SIGNED", bundle


def deploy_as_printed(stack: RunningStack, banner: dict[str, Any], run_dir: Path) -> list[int | None]:
    """Run the printed ``fleet deploy`` command; once both devices run the demo app, its pids."""
    line = re.search(r"^\s+(\S+ fleet deploy fleet-demo 1\.0\.0 --group demo --canary 1)$", stack.text, re.MULTILINE)
    assert line, stack.text
    env = environment() | {"DISTRIBUTION_URL": banner["url"], "DISTRIBUTION_TOKEN": banner["token"]}
    done = subprocess.run(shlex.split(line[1]) + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["app"] == "fleet-demo"
    for _ in range(int(READY_TIMEOUT * 2)):  # the devices' own heartbeats say what they run; a hang guard
        status, devices = http("GET", f"{banner['url']}/fleet/api/v1/devices?group=demo", banner["token"])
        assert status == 200, devices
        if [d["apps"].get("fleet-demo", {}).get("version") for d in devices["devices"]] == ["1.0.0"] * 2:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the two devices never reported fleet-demo 1.0.0: {devices}")
    return [fleet_app.app_pid(root) for root in sorted(run_dir.glob("agents/*/root"))]


def test_make_run_starts_a_trusted_topology_with_two_devices_and_ctrl_c_stops_every_process_with_exit_0(
    tmp_path: Path, start_stack: Any
) -> None:
    run_dir = tmp_path / "run"
    stack = start_stack(run_dir)
    banner = stack.banner()
    assert re.search(r"distribute demo 1\.0\.0 --wait$", stack.text, re.MULTILINE), stack.text
    assert re.search(r"status demo 1\.0\.0$", stack.text, re.MULTILINE), stack.text
    assert re.search(r"curl -O http://127\.0\.0\.1:\d+/artifactory/releases-local/demo/1\.0\.0/", stack.text)
    assert re.search(r"fleet devices$", stack.text, re.MULTILINE), stack.text
    consoles = re.findall(r"web console\s+(http://\S+/ui/)", stack.text)
    assert consoles == [banner["url"] + "/ui/", *(f"{u}/ui/" for u, _ in banner["edges"].values())], stack.text
    for console in consoles:  # each answers its login page
        status, page = http("GET", console + "login")
        assert status == 200 and "Log in" in page, page
    check_trusted_and_registered(banner)
    children = children_of(stack.proc.pid)
    assert len(children) == 3 + 2, children  # the service, two edges, two agents
    apps = [pid for pid in deploy_as_printed(stack, banner, run_dir) if pid is not None]
    assert len(apps) == 2 and all(alive(pid) for pid in apps), apps
    assert stack.stop(signal.SIGINT) == 0, stack.text
    assert "Every service stopped." in stack.text
    assert [pid for pid in children + apps if alive(pid)] == []


def test_running_again_on_the_same_directory_keeps_the_tokens_and_rewires_moved_edges(
    tmp_path: Path, start_stack: Any
) -> None:
    run_dir = tmp_path / "run"
    first = start_stack(run_dir)
    before = first.banner()
    assert first.stop(signal.SIGTERM) == 0, first.text
    tokens = json.loads((run_dir / "tokens.json").read_text())
    assert (run_dir / "tokens.json").stat().st_mode & 0o077 == 0

    second = start_stack(run_dir)  # new free ports: every registration must follow the edges
    after = second.banner()
    assert after["token"] == before["token"]
    assert {n: t for n, (_, t) in after["edges"].items()} == {n: t for n, (_, t) in before["edges"].items()}
    assert json.loads((run_dir / "tokens.json").read_text()) == tokens  # distributor tokens kept
    check_trusted_and_registered(after)

    # the compose `setup` service's command wires running services the same way, again and again
    edge_url, edge_token = after["edges"]["edge-1"]
    state = str(run_dir / "tokens.json")
    setup = subprocess.run(
        [sys.executable, "-m", "devstack.setup", "--edge", f"edge-1={edge_url}", "--state", state],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=environment() | {"DISTRIBUTION_URL": after["url"], "DISTRIBUTION_TOKEN": after["token"],
                             "EDGE_TOKEN": edge_token},
    )  # fmt: skip
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "✓ edge-1 trusts key" in setup.stdout and "✓ bundle demo 1.0.0 SIGNED" in setup.stdout
    check_trusted_and_registered(after)
    assert second.stop(signal.SIGTERM) == 0, second.text


def child_serving(pid: int, data_dir_name: str) -> int:
    """The child of ``pid`` whose command line names the data dir ``data_dir_name``."""
    for child in children_of(pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if any(arg.decode().endswith("/" + data_dir_name) for arg in argv):
            return child
    pytest.fail(f"no child of {pid} serves {data_dir_name}")


def test_make_run_restarts_a_service_that_dies_on_its_port_and_ctrl_c_still_stops_all(
    tmp_path: Path, start_stack: Any
) -> None:
    stack = start_stack(tmp_path / "run")
    banner = stack.banner()
    edge_url, edge_token = banner["edges"]["edge-1"]
    killed = child_serving(stack.proc.pid, "edge-1")
    os.kill(killed, signal.SIGKILL)

    stack.read_until("edge-1 is back at", READY_TIMEOUT)
    assert re.search(r"edge-1 exited with status -9; restarting it in 1 s", stack.text), stack.text
    assert f"edge-1 is back at {edge_url}" in stack.text  # same port: its registration still holds
    assert child_serving(stack.proc.pid, "edge-1") != killed
    check_trusted_and_registered(banner)
    status, _ = http("GET", edge_url + "/artifactory/api/system/readiness", edge_token)
    assert status == 200

    children = children_of(stack.proc.pid)
    assert len(children) == 3 + 2, children
    assert stack.stop(signal.SIGINT) == 0, stack.text
    assert "Every service stopped." in stack.text
    assert [pid for pid in children if alive(pid)] == []
