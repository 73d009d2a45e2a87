"""Devices that come and go, with real agents: one offline during a deployment gets its desired
version when it starts again; a revoked one stops with a clear line."""

from __future__ import annotations

import signal

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


def test_a_device_offline_during_a_deployment_catches_up_when_it_starts_again(plane: Plane, devices: Devices) -> None:
    agents = devices.add(3)
    devices.running(BASE)
    files = plane.release("1.3.0")
    away = agents[0]
    assert away.kill() == -signal.SIGKILL  # a power cut
    wait_until(lambda: not plane.cli.device(away.name)["online"], "the stopped device to show offline")
    offline = plane.cli.json("fleet", "devices", "--group", devices.group, "--offline")
    dep = devices.deploy("1.3.0")
    devices.wait(
        dep,
        lambda ds: all(ds[a.name]["state"] == "succeeded" for a in agents[1:]),
        "the online devices to install",
    )
    assert devices.targets(dep)[away.name]["state"] == "pending"
    assert plane.cli.deployment(dep)["state"] == "running"  # one phase of 3 needs every device
    assert away.current == BASE

    away.start()
    done = plane.cli.wait_deployment(dep, WAIT)
    assert done["state"] == "completed", done
    for agent in agents:
        assert_whole(agent, "1.3.0", files)
        assert agent.answer() == (200, "1.3.0")
    assert [d["name"] for d in offline] == [away.name]


def test_a_revoked_device_stops_its_agent_with_a_clear_line(plane: Plane, devices: Devices) -> None:
    (agent,) = devices.add(1)
    plane.cli.run("fleet", "device", "revoke", agent.name)
    assert agent.wait_exit(WAIT) == 3, agent.log_tail()
    assert "credential revoked or unknown: the control plane answered 401" in agent.log()
    assert plane.cli.device(agent.name)["revoked"]
