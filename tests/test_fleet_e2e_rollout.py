"""A full rollout to three real ``node-agent`` processes through two real edges: every device
installs the demo app, runs it, answers its health check with the version, and the fleet
list shows it. The agent listens on no port."""

from __future__ import annotations

import psutil

from tests.fleet_e2e import (  # noqa: F401
    BASE,
    WAIT,
    Devices,
    Plane,
    assert_whole,
    devices_fixture,
    plane_fixture,
    wait_until,
)


def test_a_rollout_reaches_every_device_which_then_runs_and_reports_the_version(plane: Plane, devices: Devices) -> None:
    files = plane.release("1.1.0")
    agents = devices.add(3)
    dep = devices.deploy("1.1.0", "--canary", "1")
    done = plane.cli.wait_deployment(dep, WAIT)
    assert done["state"] == "completed", done
    assert [p["size"] for p in done["phases"]] == [1, 2]
    assert {n: (d["state"], d["version"]) for n, d in devices.targets(dep).items()} == {
        a.name: ("succeeded", "1.1.0") for a in agents
    }
    for agent in agents:
        assert_whole(agent, "1.1.0", files)
        assert agent.answer() == (200, "1.1.0")
    # the list is what devices report: each one's next heartbeat (within a poll interval of
    # its success) carries the new version
    listed = ""

    def every_device_reports_it() -> bool:
        nonlocal listed
        listed = plane.cli.run("fleet", "devices", "--group", devices.group).stdout
        rows = [line for line in listed.splitlines() if line.startswith(devices.group)]
        return len(rows) == 3 and all(" online " in r and "fleet-demo=1.1.0" in r for r in rows)

    wait_until(every_device_reports_it, "every device to report 1.1.0 in the fleet list", lambda: listed)
    only = plane.cli.json("fleet", "devices", "--group", devices.group, "--app", "fleet-demo", "--version", "1.1.0")
    assert sorted(d["name"] for d in only) == sorted(a.name for a in agents)
    status = plane.cli.run("fleet", "status", str(dep)).stdout
    per_device = [line.split() for line in status.splitlines() if line.strip().startswith(devices.group)]
    assert "completed" in status.splitlines()[0] and [d[-1] for d in per_device] == ["succeeded"] * 3, status


def test_the_agent_listens_on_no_port(plane: Plane, devices: Devices) -> None:
    (agent,) = devices.add(1)
    devices.running(BASE)  # it has checked in, downloaded and installed: every path it has was used
    assert agent.pid is not None
    process = psutil.Process(agent.pid)
    family = [process, *process.children(recursive=True)]
    listening = [c for p in family for c in p.net_connections("all") if c.status == psutil.CONN_LISTEN]
    assert listening == []
    assert process.is_running() and agent.returncode is None
