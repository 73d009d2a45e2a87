"""The agent's runtime reports against the real control plane (served on a port): full on start,
then only what changed, nothing when nothing changed, full again when the control plane asks
or what is reported changes."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.http import Http, ServerUnavailable
from agent.identity import Identity
from agent.runtime import ProcInfo
from agent.sensor_loop import Sensor
from agent.settings import AgentSettings
from tests.agent_plane import free_port
from tests.fleet_rows import add_device, credential_of
from tests.runtime_plane import get, plane_fixture  # noqa: F401
from wire.runtime import AppDrift, RuntimeSettings


class Table:
    """A process table the test edits: real files as executables."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "bin"
        self.dir.mkdir()
        self.procs: dict[int, ProcInfo] = {}

    def start(self, pid: int, name: str) -> None:
        exe = self.dir / name
        exe.write_bytes(name.encode())
        self.procs[pid] = ProcInfo(pid, 1000 + pid, str(exe), (str(exe), "--flag"), "till", str(exe))

    def __call__(self) -> list[ProcInfo]:
        return list(self.procs.values())


@pytest.fixture(name="sensor")
async def sensor_fixture(plane: Any, tmp_path: Path) -> tuple[Sensor, Table]:
    await add_device(plane.app, "till-3", group="pos")
    identity = Identity(str(plane.make_url("")).rstrip("/"), "dev-till-3", "till-3", "pos", credential_of("till-3"), 1)
    table = Table(tmp_path)
    sensor = Sensor(AgentSettings(tmp_path / "agent"), identity, Http(30), threading.Event(), table=table)
    sensor.scanner.containers = False
    return sensor, table


async def pids(plane: Any) -> list[int]:
    return [p["pid"] for p in (await get(plane, "/devices/till-3"))["processes"]]


async def report(sensor: Sensor, settings: RuntimeSettings | None = None) -> Any:
    return await asyncio.to_thread(sensor.report_once, settings or RuntimeSettings())


async def test_the_first_report_is_full_then_only_changes_are_sent(plane: Any, sensor: tuple[Sensor, Table]) -> None:
    agent, table = sensor
    table.start(1, "a")
    table.start(2, "b")
    first = await report(agent)
    assert first.full and [p.pid for p in first.started] == [1, 2]
    assert await report(agent) is None  # nothing changed: nothing sent
    del table.procs[1]
    table.start(3, "c")
    delta = await report(agent)
    assert (delta.base, [p.pid for p in delta.started], delta.stopped) == (1, [3], ((1, 1001),))
    assert await pids(plane) == [2, 3]


async def test_when_the_control_plane_lost_track_the_next_report_is_full(
    plane: Any, sensor: tuple[Sensor, Table]
) -> None:
    agent, table = sensor
    table.start(1, "a")
    await report(agent)
    agent.seq = 7  # as if the control plane had lost the reports since (a restored backup)
    table.start(2, "b")
    refused = await report(agent)
    assert not refused.full and agent.need_full
    assert await pids(plane) == [1]
    again = await report(agent)
    assert again.full and [p.pid for p in again.started] == [1, 2]
    assert await pids(plane) == [1, 2]


async def test_a_change_of_what_is_reported_sends_everything_again(plane: Any, sensor: tuple[Sensor, Table]) -> None:
    agent, table = sensor
    table.start(1, "a")
    table.start(2, "b")
    agent.configure(RuntimeSettings())
    await report(agent, agent.config)
    dropped = RuntimeSettings(exclude=("*/a",), drop_cmdline=True)
    agent.configure(dropped)
    full = await report(agent, dropped)
    assert full.full and [(p.pid, p.cmdline) for p in full.started] == [(2, None)]
    assert await pids(plane) == [2]


class Findings:
    """Stands in for the drift checker (``agent/drift.py`` is tested on real files on its own)."""

    def __init__(self) -> None:
        self.found: tuple[AppDrift, ...] = ()

    def check(self) -> tuple[AppDrift, ...]:
        return self.found


async def test_drift_found_while_the_control_plane_is_down_is_sent_when_it_is_back(
    plane: Any, sensor: tuple[Sensor, Table]
) -> None:
    agent, table = sensor
    table.start(1, "a")
    findings = Findings()
    agent.drift = findings  # type: ignore[assignment]
    agent.drift_interval = 0
    await report(agent)
    findings.found = (AppDrift("till", "1.0", modified=("app.py",)),)
    server = agent.identity
    agent.identity = replace(server, server=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(ServerUnavailable):
        await report(agent)
    agent.identity, agent.next_drift = server, float("inf")  # back, and no new check due
    sent = await report(agent)
    assert sent.drift == findings.found
    assert [(d["path"], d["kind"]) for d in (await get(plane, "/devices/till-3"))["drift"]] == [("app.py", "modified")]
    assert await report(agent) is None  # acknowledged: not sent again
