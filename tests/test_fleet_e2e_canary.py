"""Canaries and rollbacks with real agents: a broken version halts at its canary, which rolls
itself back and runs the old version again while no other device starts; ``distribution
fleet rollback`` sends every device that installed a version back to the one before."""

from __future__ import annotations

import json
from typing import Any

from devstack.fleet import AgentProcess
from tests.fleet_e2e import BASE, WAIT, Devices, Plane, assert_whole, devices_fixture, plane_fixture  # noqa: F401


def last_action(agent: AgentProcess) -> dict[str, Any]:
    """The action the agent's journal names (the last one it worked on)."""
    return dict(json.loads((agent.data_dir / "journal.json").read_text())["action"])


def checked_in_again(devices: Devices, agents: list[AgentProcess], times: int = 2) -> None:
    """Each agent has checked in ``times`` more times: it heard whatever it was to hear."""
    for agent in agents:
        for _ in range(times):
            agent.wait_online(devices.plane.cli.device(agent.name)["last_seen"])


def test_a_broken_version_halts_at_its_canary_which_rolls_back_and_no_other_device_starts(
    plane: Plane, devices: Devices
) -> None:
    agents = devices.add(3)
    devices.running(BASE)
    plane.release("2.0.0", broken=True)
    dep = devices.deploy("2.0.0", "--canary", "1")
    halted = plane.cli.wait_deployment(dep, WAIT)
    assert halted["state"] == "halted", halted
    states = devices.targets(dep)
    (canary,) = [name for name, d in states.items() if d["phase"] == 1]
    failed = states[canary]
    assert (failed["state"], failed["step"], failed["rolled_back"]) == ("failed", "health_check", True), failed
    assert failed["version"] == BASE and "answered 500" in failed["message"], failed
    others = [a for a in agents if a.name != canary]
    assert {states[a.name]["state"] for a in others} == {"pending"}
    assert_whole(devices.agents[canary], BASE, plane.release(BASE))
    assert devices.agents[canary].answer() == (200, BASE)
    status = plane.cli.run("fleet", "status", str(dep)).stdout
    assert f"{canary}  phase 1  failed at health_check" in status and f"rolled back to {BASE}" in status, status

    refused = plane.cli.run("fleet", "resume", str(dep), check=False)
    assert refused.returncode != 0 and "halted" in refused.stderr, refused
    plane.cli.run("fleet", "cancel", str(dep))
    checked_in_again(devices, others)
    states = devices.targets(dep)
    assert {states[a.name]["state"] for a in others} == {"canceled"}
    for agent in agents:
        assert agent.current == BASE and agent.answer() == (200, BASE)
    for agent in others:  # the last action each worked on is the one that installed the base version
        assert last_action(agent)["deployment"] != str(dep), last_action(agent)


def test_a_rollback_sends_every_device_that_installed_the_version_back_to_the_one_before(
    plane: Plane, devices: Devices
) -> None:
    agents = devices.add(3)
    devices.running(BASE)
    plane.release("1.2.0")
    dep = devices.running("1.2.0")
    rolled = plane.cli.json("fleet", "rollback", str(dep))
    assert rolled["state"] == "rolled_back", rolled
    back = devices.wait(
        dep,
        lambda ds: all((d["rollback"] or {}).get("state") == "succeeded" for d in ds.values()),
        "every device to report its rollback",
    )
    assert {n: d["rollback"]["version"] for n, d in back.items()} == {a.name: BASE for a in agents}
    for agent in agents:
        assert agent.current == BASE and agent.answer() == (200, BASE)
    again = plane.cli.json("fleet", "rollback", str(dep))
    assert again["state"] == "rolled_back"  # asking again is the same success
