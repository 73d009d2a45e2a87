"""The fleet end to end, every process real: ``distribution serve``, two ``edge serve`` registered
with it (the fleet's URL key pushed to them), and ``node-agent`` processes installing the demo
app (``devstack/fleet_app.py``).

The plane (service and edges) is shared by the tests of one file (``plane`` fixture); each
test enrolls its own devices into a group of its own, so deployments never cross tests.

    from tests.fleet_e2e import plane_fixture, devices_fixture  # noqa: F401
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack import fleet_app, wiring
from devstack.fleet import AgentProcess, Enrollment, FleetCli, prepare_fleet
from devstack.services import DistributionProcess, EdgeProcess

BASE = "1.0.0"
WAIT = 120.0  # hang guard for a deployment on a few local devices, never a speed check
_groups = itertools.count(1)
# Ports for the devices' apps: a block for each test process, below the kernel's ephemeral range
APP_PORTS_FROM, APP_PORTS_PER_PROCESS = 20_000, 400
_app_ports = itertools.count()


def app_port() -> int:
    """A port for a device's app, which binds it only seconds later (after its enrolment, a
    deployment and an install). A port the kernel calls free now could meanwhile go to another test
    process's device, whose app then answers in this one's place; so each test process draws from
    a block of its own, where the kernel hands out no port either, skipping any port in use."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = APP_PORTS_FROM + APP_PORTS_PER_PROCESS * (int(worker) if worker.isdigit() else 0)
    for _ in range(APP_PORTS_PER_PROCESS):
        port = first + next(_app_ports) % APP_PORTS_PER_PROCESS
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port for a device's app in {first}-{first + APP_PORTS_PER_PROCESS - 1}")


@dataclass
class Plane:
    service: DistributionProcess
    edges: dict[str, EdgeProcess]
    cli: FleetCli
    published: set[str] = field(default_factory=set)

    def release(self, version: str, *, broken: bool = False, padding: int = 0) -> dict[str, bytes]:
        """Publish ``fleet-demo VERSION`` (signed) and distribute it to both edges, Completed."""
        files = fleet_app.publish_version(
            self.service.url, self.service.admin_token, version, broken=broken, padding=padding
        )
        if version not in self.published:
            self.cli.distribute(fleet_app.BUNDLE, version)
            self.published.add(version)
        return files


@pytest.fixture(name="plane", scope="module")
def plane_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    base = tmp_path_factory.mktemp("plane")
    service = DistributionProcess(base / "distribution")
    edges = {f"edge-{i}": EdgeProcess(base / f"edge-{i}") for i in (1, 2)}
    service.start()
    try:
        for edge in edges.values():
            edge.start()
        targets = [wiring.edge_target(i, e.url, e.admin_token, name) for i, (name, e) in enumerate(edges.items())]
        wiring.connect(service.url, service.admin_token, targets, wiring.State(None), lambda _: None,
                       admin_registration=True)  # fmt: skip
        plane = Plane(service, edges, FleetCli(service.url, service.admin_token))
        plane.release(BASE)
        yield plane
    finally:
        for edge in edges.values():
            edge.stop()
        service.stop()


class Devices:
    """The devices of one test: a group of their own, each a real agent with the demo app."""

    def __init__(self, plane: Plane, base: Path) -> None:
        self.plane, self.base = plane, base
        self.group = f"e2e-{next(_groups)}-{time.monotonic_ns() % 10**6}"
        self.enrollment: Enrollment = prepare_fleet(plane.cli, self.group)
        self.agents: dict[str, AgentProcess] = {}

    def add(self, count: int, **settings: Any) -> list[AgentProcess]:
        """``count`` more devices, enrolled and started (each online once this returns)."""
        added = []
        for _ in range(count):
            name = f"{self.group}-dev{len(self.agents) + 1}"
            agent = AgentProcess(name, self.base / name, self.plane.cli, app_port=app_port(), **settings)
            agent.enroll(self.enrollment)
            self.agents[name] = agent
            added.append(agent.start())
        return added

    def deploy(self, version: str, *options: str) -> int:
        return self.plane.cli.deploy(version, "--group", self.group, *options)

    def running(self, version: str) -> int:
        """Bring every device to ``version`` with a plain deployment that must complete; its id."""
        dep = self.deploy(version)
        done = self.plane.cli.wait_deployment(dep, WAIT)
        assert done["state"] == "completed", done
        for agent in self.agents.values():
            assert agent.current == version and agent.answer() == (200, version), agent.log_tail()
        return dep

    def targets(self, dep_id: int) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in self.plane.cli.deployment(dep_id)["devices"]}

    def wait(self, dep_id: int, check: Callable[[dict[str, dict[str, Any]]], bool], what: str) -> Any:
        """The deployment's devices once ``check`` holds for them (a hang guard after WAIT)."""
        seen: dict[str, dict[str, Any]] = {}

        def holds() -> bool:
            seen.update(self.targets(dep_id))
            return check(seen)

        wait_until(holds, what, lambda: f"{seen}\n{self.logs()}")
        return seen

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{agent.log_tail()}" for name, agent in self.agents.items())

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop_all()


@pytest.fixture(name="devices")
def devices_fixture(plane: Plane, tmp_path: Path) -> Iterator[Devices]:
    found = Devices(plane, tmp_path)
    try:
        yield found
    finally:
        found.stop()


def wait_until(check: Callable[[], Any], what: str, details: Callable[[], str] = str) -> None:
    """Poll ``check`` until it holds; fail after WAIT (a hang guard, not a measure)."""
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {details()}")
        time.sleep(0.2)


def assert_whole(agent: AgentProcess, version: str, files: dict[str, bytes]) -> None:
    """``current`` names ``version`` and holds exactly its signed files, byte for byte."""
    assert agent.current == version
    current = fleet_app.install_dir(agent.install_root) / "current"
    assert sorted(p.name for p in current.iterdir()) == sorted(path.rsplit("/", 1)[1] for path in files)
    for path, data in files.items():
        assert (current / path.rsplit("/", 1)[1]).read_bytes() == data, path
