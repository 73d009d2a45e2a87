"""An edge killed with -9 while a real agent downloads from it: the agent resumes the same file
from the other edge (a Range request from where it was) and the install succeeds."""

from __future__ import annotations

import time

import psutil

from devstack.fleet import AgentProcess
from devstack.services import EdgeProcess
from tests.edge_setup import http
from tests.fleet_e2e import WAIT, Devices, Plane, assert_whole, devices_fixture, plane_fixture  # noqa: F401

# more than loopback's socket buffers hold (several MiB), so a kill leaves most of it unsent;
# the agent's bandwidth cap makes the download last seconds, long enough to cut
PADDING = 24 * 1024 * 1024
RATE = 3 * 1024 * 1024


def edge_in_use(plane: Plane, agent: AgentProcess) -> tuple[str, EdgeProcess]:
    """The edge the agent downloads from, once its partial file holds some bytes."""
    ports = {edge.port: (name, edge) for name, edge in plane.edges.items()}
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        parts = list((agent.data_dir / "staging").glob("*/*.part"))
        assert agent.pid is not None
        peers = [c.raddr.port for c in psutil.Process(agent.pid).net_connections("tcp") if c.raddr]
        used = [ports[p] for p in peers if p in ports]
        if parts and parts[0].stat().st_size > 0 and used:
            return used[0]
        time.sleep(0.05)
    raise AssertionError(f"the agent never downloaded from an edge\n{agent.log_tail()}")


def kill_9(edge: EdgeProcess) -> None:
    """kill -9 of the edge and every process serving for it (a worker must not finish its requests)."""
    process = psutil.Process(edge.pid)
    for child in process.children(recursive=True):
        child.kill()
    process.kill()


def payload_downloads(edge: EdgeProcess, version: str) -> list[dict[str, object]]:
    status, answer = http("GET", f"{edge.url}/artifactory/api/audit?action=download&limit=1000", edge.admin_token)
    assert status == 200, answer
    return [r for r in answer["records"] if str(r["path"]).endswith(f"fleet-demo/{version}/payload.bin")]


def test_an_edge_killed_mid_download_is_replaced_by_the_other_and_the_same_file_resumes(
    plane: Plane, devices: Devices
) -> None:
    files = plane.release("4.0.0", padding=PADDING)
    (agent,) = devices.add(1, bandwidth_limit=RATE)
    dep = devices.deploy("4.0.0")
    name, edge = edge_in_use(plane, agent)
    (other,) = [e for n, e in plane.edges.items() if n != name]
    kill_9(edge)
    try:
        devices.wait(dep, lambda ds: ds[agent.name]["state"] in ("succeeded", "failed"), "the device's report")
        final = devices.targets(dep)[agent.name]
        assert (final["state"], final["version"]) == ("succeeded", "4.0.0"), final
        assert_whole(agent, "4.0.0", files)
        assert agent.answer() == (200, "4.0.0")
        assert f"from {name} interrupted" in agent.log(), agent.log_tail()
        deadline = time.monotonic() + 30  # the edge writes its audit trail every half second
        while not (records := payload_downloads(other, "4.0.0")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [r["status"] for r in records] == [206], records  # resumed, not started over
        assert 0 < int(records[0]["bytes"]) < PADDING, records  # type: ignore[call-overload]
    finally:
        edge.stop()
        edge.start()  # on its port: its registration holds for the next test
