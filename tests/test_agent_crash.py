"""kill -9 of a real ``node-agent run`` at every step of an update, then a restart.

The agent kills itself at the named step (``NODE_AGENT_STOP_AT``, the test hook), as a
power cut would. Right after the kill and after recovery, ``current`` names a whole
version whose every file matches its signed manifest; the journal and the feedback say
how the action ended. Before the switch the agent resumes and finishes; once the new
version may be live but unchecked, it rolls back.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agent.journal import Journal, Step
from tests.agent_device import Device, assert_whole, device_fixture, plane_fixture  # noqa: F401
from tests.agent_plane import exit_of, start_agent, stop_agent, wait_for
from tests.gpg_keys import key_factory_fixture, keys_fixture  # noqa: F401
from wire import fleet

BIG = os.urandom(512 * 1024)  # a file of several chunks, so a kill lands in the middle of it

RESUMED = ["mid_download", "downloading", "verified", "unpacking", "built", "unpacked"]
ROLLED_BACK = ["switched", "restarting", "checking"]


def run_to_the_end(device: Device, action: fleet.Action, stop_at: str) -> fleet.Feedback:
    device.plane.actions = [action]
    crashed = start_agent("run", "--data-dir", str(device.data_dir), stop_at=stop_at)
    code, log = exit_of(crashed)
    assert code == -signal.SIGKILL, log
    assert f"stopping at {stop_at}" in log
    assert_current_whole(device)
    agent = start_agent("run", "--data-dir", str(device.data_dir))
    try:
        final = wait_for(lambda: device.plane.final(action.action_id), what="the action's final report")
        # the report goes out just before the journal closes the action: stopping in between would redo it
        wait_for(lambda: getattr(Journal(device.data_dir).load(), "step", None) == Step.DONE, what="the journal")
    finally:
        code, log = stop_agent(agent)
    assert code == 0, log
    return final


def assert_current_whole(device: Device) -> None:
    version = device.installer.current_version()
    assert version in device.published, version
    assert device.installer.is_whole(version)
    assert_whole(device, device.published[version])


@pytest.fixture
def crashing(device: Device) -> Device:
    device.published = {}  # type: ignore[attr-defined]
    v1 = device.publish("1.0.0")
    device.published["1.0.0"] = v1  # type: ignore[attr-defined]
    device.install(v1)
    return device


@pytest.mark.parametrize("stop_at", RESUMED)
def test_a_crash_before_the_switch_resumes_and_finishes_the_install(crashing: Device, stop_at: str) -> None:
    v2 = crashing.publish("2.0.0", extra={"data.bin": BIG})
    crashing.published["2.0.0"] = v2  # type: ignore[attr-defined]
    action = crashing.action(v2)
    final = run_to_the_end(crashing, action, stop_at)
    assert final.state == fleet.FeedbackState.SUCCEEDED and final.version == "2.0.0"
    assert "resumed after the agent was interrupted at step" in " ".join(
        f.message for f in crashing.plane.feedback if f.action_id == action.action_id
    )
    assert_current_whole(crashing)
    assert crashing.answer() == "2.0.0"
    entry = Journal(crashing.data_dir).load()
    assert entry is not None and entry.step == Step.DONE and entry.outcome["state"] == "succeeded"


@pytest.mark.parametrize("stop_at", ROLLED_BACK)
def test_a_crash_after_the_switch_rolls_back_to_the_previous_version(crashing: Device, stop_at: str) -> None:
    v2 = crashing.publish("2.0.0")
    crashing.published["2.0.0"] = v2  # type: ignore[attr-defined]
    action = crashing.action(v2)
    final = run_to_the_end(crashing, action, stop_at)
    assert final.state == fleet.FeedbackState.FAILED and final.rolled_back and final.version == "1.0.0"
    assert f"interrupted during {stop_at}" in final.message
    assert crashing.installer.current_version() == "1.0.0"
    assert_current_whole(crashing)
    assert crashing.answer() == "1.0.0"
    entry = Journal(crashing.data_dir).load()
    assert entry is not None and entry.outcome["state"] == "failed" and entry.outcome["rolled_back"] is True


def test_a_crash_during_a_rollback_finishes_the_rollback(crashing: Device) -> None:
    bad = crashing.publish("2.0.0", healthy=False)
    crashing.published["2.0.0"] = bad  # type: ignore[attr-defined]
    app = crashing.app(health=fleet.HealthCheck(url=f"http://127.0.0.1:{crashing.port}/health", timeout=2))
    action = crashing.action(bad, app=app)
    final = run_to_the_end(crashing, action, "rolling_back")
    assert final.state == fleet.FeedbackState.FAILED and final.rolled_back
    assert final.step == fleet.FlowStep.HEALTH_CHECK and "status 500" in final.message
    assert crashing.answer() == "1.0.0"
    assert not Path(crashing.install_dir / "versions" / "2.0.0").exists()


def test_a_crash_after_the_outcome_is_journaled_still_reports_it(crashing: Device) -> None:
    """Killed once the outcome is decided and journaled, before the report is queued: the next
    start reports it, and nothing is done again."""
    v2 = crashing.publish("2.0.0")
    crashing.published["2.0.0"] = v2  # type: ignore[attr-defined]
    action = crashing.action(v2)
    final = run_to_the_end(crashing, action, "done")
    assert final.state == fleet.FeedbackState.SUCCEEDED and final.version == "2.0.0"
    assert crashing.installer.current_version() == "2.0.0"
    assert crashing.answer() == "2.0.0"
    states = [f.state for f in crashing.plane.feedback if f.action_id == action.action_id]
    assert states.count(fleet.FeedbackState.SUCCEEDED) == 1 and fleet.FeedbackState.FAILED not in states
