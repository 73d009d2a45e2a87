"""A real agent killed with -9 at each step of a real deployment, then started again: it
resumes (before the switch) or rolls back (once the new version was live but unchecked);
``current`` always names a whole, verified version, and the deployment ends with a report
that matches what the device runs.

The agent kills itself at the step (``NODE_AGENT_STOP_AT``, its test hook), as a power cut would.
"""

from __future__ import annotations

import signal

import pytest

from tests.fleet_e2e import BASE, WAIT, Devices, Plane, assert_whole, devices_fixture, plane_fixture  # noqa: F401

PADDING = 512 * 1024  # several download chunks, so a kill lands in the middle of the file

STEPS = {  # where the agent dies -> (the version, how the deployment ends for the device)
    "mid_download": ("3.0.1", "succeeded"),
    "verified": ("3.0.2", "succeeded"),
    "unpacked": ("3.0.3", "succeeded"),  # between unpack and switch
    "checking": ("3.0.4", "failed"),  # during the health check: the new version was live, unchecked
}


@pytest.mark.parametrize("step", list(STEPS))
def test_an_agent_killed_at_a_step_resumes_or_rolls_back_and_reports_the_truth(
    plane: Plane, devices: Devices, step: str
) -> None:
    version, outcome = STEPS[step]
    base_files = plane.release(BASE)
    new_files = plane.release(version, padding=PADDING)
    (agent,) = devices.add(1)
    devices.running(BASE)
    agent.stop()
    agent.start(stop_at=step)
    dep = devices.deploy(version)
    assert agent.wait_exit(WAIT) == -signal.SIGKILL, agent.log_tail()
    assert f"stopping at {step}" in agent.log()
    running_files = new_files if agent.current == version else base_files
    assert_whole(agent, str(agent.current), running_files)  # whole and verified, even right after the kill

    agent.start()
    devices.wait(dep, lambda ds: ds[agent.name]["state"] in ("succeeded", "failed"), "the device's final report")
    final = devices.targets(dep)[agent.name]
    assert final["state"] == outcome, final
    if outcome == "succeeded":
        assert_whole(agent, version, new_files)
        assert agent.answer() == (200, version)
        assert final["version"] == version
    else:
        assert (final["step"], final["rolled_back"], final["version"]) == ("health_check", True, BASE), final
        assert "interrupted during checking" in final["message"], final
        assert_whole(agent, BASE, base_files)
        assert agent.answer() == (200, BASE)
