"""The update flow on a device, with real commands and a tiny real app serving a health URL.

The flow runs in this process against the control-plane double (which also serves the
bundle files); the app is a real Python process started by the bundle's ``restart.sh``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import psutil
import pytest

from agent.bundle import in_window
from agent.flow import staging_dir
from agent.journal import Journal, Step
from tests.agent_device import Device, assert_whole, device_fixture, plane_fixture  # noqa: F401
from tests.agent_plane import exit_of, start_agent
from tests.gpg_keys import key_factory_fixture, keys_fixture  # noqa: F401
from wire import fleet

SUCCESS = ["downloading", "downloaded", "installing", "restarting", "checking", "succeeded"]


def test_an_install_reports_every_step_switches_current_and_the_new_app_answers(device: Device) -> None:
    bundle = device.publish("1.0.0")
    action = device.install(bundle)
    assert device.plane.states(action.action_id) == SUCCESS
    final = device.plane.final(action.action_id)
    assert final is not None and final.version == "1.0.0"
    assert_whole(device, bundle)
    assert (device.install_dir / "current").is_symlink()
    assert device.answer() == "1.0.0"
    entry = Journal(device.data_dir).load()
    assert entry is not None and entry.step == Step.DONE and entry.outcome["state"] == "succeeded"
    assert not staging_dir(device.data_dir, action.action_id).exists()
    code, out = exit_of(start_agent("status", "--data-dir", str(device.data_dir)))
    assert code == 0 and f"app till: 1.0.0 (previous -) in {device.install_dir}" in out


def test_a_version_whose_health_url_fails_is_rolled_back_and_the_previous_one_runs_again(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    bad = device.publish("2.0.0", healthy=False)
    app = device.app(health=fleet.HealthCheck(url=f"http://127.0.0.1:{device.port}/health", timeout=2))
    action = device.install(bad, app=app)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED
    assert final.step == fleet.FlowStep.HEALTH_CHECK and final.rolled_back and final.version == "1.0.0"
    assert "did not answer 2xx" in final.message and "status 500" in final.message
    assert_whole(device, good)
    assert device.answer() == "1.0.0"
    assert not (device.install_dir / "versions" / "2.0.0").exists()


def test_a_hanging_health_command_is_killed_with_its_children_at_its_deadline(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    pid_file = device.run_dir / "hang.pid"
    hang = fleet.HealthCheck(command=f"echo checking; sleep 600 & echo $! > {pid_file}; wait", timeout=2)
    action = device.install(device.publish("2.0.0"), app=device.app(health=hang))
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED and final.rolled_back
    assert final.step == fleet.FlowStep.HEALTH_CHECK
    assert "checking" in final.message and "killed after 2 s" in final.message
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert_whole(device, good)
    assert device.answer() == "1.0.0"


def test_a_restart_command_that_fails_is_reported_with_its_output_and_rolled_back(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    broken = device.publish("2.0.0", restart_extra="echo cannot bind the port >&2; exit 7")
    action = device.install(broken)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED
    assert final.step == fleet.FlowStep.RESTART and final.rolled_back and final.version == "1.0.0"
    assert "cannot bind the port" in final.message and "exited with status 7" in final.message
    assert_whole(device, good)
    assert device.answer() == "1.0.0"


def test_a_failing_pre_install_leaves_current_untouched(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    app = device.app(pre_install="echo migrating; test -f app.py && exit 4")
    action = device.install(device.publish("2.0.0"), app=app)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED
    assert final.step == fleet.FlowStep.PRE_INSTALL and not final.rolled_back and final.version == "1.0.0"
    assert "migrating" in final.message
    assert_whole(device, good)
    assert "restarting" not in device.plane.states(action.action_id)


def test_a_rollback_action_uses_the_kept_version_without_downloading_it(device: Device) -> None:
    v1, v2 = device.publish("1.0.0"), device.publish("2.0.0")
    device.install(v1)
    device.install(v2)
    assert device.answer() == "2.0.0"
    before = len(device.plane.requests)
    action = device.action(None, "1.0.0", kind=fleet.ActionKind.ROLLBACK)
    device.flow().start(action)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.SUCCEEDED and final.version == "1.0.0"
    assert not [r for r in device.plane.requests[before:] if r.endswith("/sources")]
    assert_whole(device, v1)
    assert device.answer() == "1.0.0"


def test_a_rollback_to_a_version_no_longer_kept_downloads_it_again(device: Device) -> None:
    v1, v2 = device.publish("1.0.0"), device.publish("2.0.0")
    device.install(v1)
    device.install(v2)
    device.installer.discard("1.0.0")
    action = device.action(v1, kind=fleet.ActionKind.ROLLBACK)
    device.flow().start(action)
    assert device.plane.final(action.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert f"GET {fleet.DEVICE_API}/actions/{action.action_id}/sources" in device.plane.requests
    assert_whole(device, v1)


def test_a_rollback_to_no_version_removes_current(device: Device) -> None:
    device.install(device.publish("1.0.0"))
    action = device.action(None, None, kind=fleet.ActionKind.ROLLBACK)
    device.flow().start(action)
    assert device.plane.final(action.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert not (device.install_dir / "current").exists()


@pytest.mark.parametrize("installs", [2, 3, 4])  # keep - 1, keep, keep + 1
def test_the_last_keep_versions_are_kept(device: Device, installs: int) -> None:
    versions = [f"{n}.0.0" for n in range(1, installs + 1)]
    for version in versions:
        device.install(device.publish(version))
    kept = sorted(p.name for p in (device.install_dir / "versions").iterdir() if not p.name.startswith("."))
    assert kept == versions[-3:]
    assert device.installer.current_version() == versions[-1]


def test_a_version_rolled_back_to_counts_as_the_newest_when_pruning(device: Device) -> None:
    bundles = [device.publish(f"{n}.0.0") for n in range(1, 4)]
    for bundle in bundles:
        device.install(bundle)
    rollback = device.action(None, "1.0.0", kind=fleet.ActionKind.ROLLBACK, app=device.app(keep=2))
    device.flow().start(rollback)
    device.install(device.publish("4.0.0"), app=device.app(keep=2))
    kept = sorted(p.name for p in (device.install_dir / "versions").iterdir() if not p.name.startswith("."))
    assert kept == ["1.0.0", "4.0.0"]  # 4.0.0 current, 1.0.0 the previous one


def test_a_downgrade_is_refused_unless_the_deployment_allows_it(device: Device) -> None:
    device.install(device.publish("2.0.0"))
    old = device.publish("1.9.9")
    before = len(device.plane.requests)
    refused = device.install(old)
    final = device.plane.final(refused.action_id)
    assert final is not None and final.state == fleet.FeedbackState.REJECTED
    assert "1.9.9 is older than the running 2.0.0" in final.message
    assert not [r for r in device.plane.requests[before:] if r.endswith("/sources")]
    assert device.installer.current_version() == "2.0.0"
    allowed = device.install(old, allow_downgrade=True)
    assert device.plane.final(allowed.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert device.answer() == "1.9.9"


def test_a_manifest_signed_by_an_untrusted_key_is_refused_before_any_download(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    forged = device.publish("2.0.0", signer="mallory")
    before = len(device.plane.requests)
    action = device.install(forged)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED and final.step == fleet.FlowStep.VERIFY
    assert "does not trust" in final.message
    assert device.plane.requests[before:] == [
        f"GET {fleet.DEVICE_API}/actions/{action.action_id}/sources",
        f"POST {fleet.FEEDBACK}",
    ]
    assert_whole(device, good)


def test_an_install_waits_for_its_maintenance_window_and_a_scheduled_one_can_be_canceled(device: Device) -> None:
    device.install(device.publish("1.0.0"))
    window = fleet.Window("02:00", "04:00", "Europe/Lisbon")
    night = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)  # 02:30 in Lisbon (WET, UTC+0)
    noon = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    action = device.action(device.publish("2.0.0"), window=window)
    device.flow(clock=lambda: noon).start(action)
    assert device.plane.states(action.action_id) == ["downloading", "downloaded", "scheduled"]
    assert device.installer.current_version() == "1.0.0"
    entry = Journal(device.data_dir).load()
    assert entry is not None and entry.step == Step.SCHEDULED
    device.flow(clock=lambda: night).resume(entry, after_crash=False)
    assert device.plane.states(action.action_id)[-1] == "succeeded"
    assert device.answer() == "2.0.0"

    later = device.action(device.publish("3.0.0"), window=window)
    flow = device.flow(clock=lambda: noon)
    flow.start(later)
    assert flow.cancel(later.action_id)
    flow.resume(Journal(device.data_dir).load(), after_crash=False)  # type: ignore[arg-type]
    assert device.plane.states(later.action_id)[-1] == "canceled"
    assert device.installer.current_version() == "2.0.0"


@pytest.mark.parametrize(
    ("start", "end", "hour", "minute", "inside"),
    [
        ("02:00", "04:00", 1, 59, False),
        ("02:00", "04:00", 2, 0, True),
        ("02:00", "04:00", 3, 59, True),
        ("02:00", "04:00", 4, 0, False),
        ("22:00", "02:00", 23, 30, True),  # spans midnight
        ("22:00", "02:00", 1, 59, True),
        ("22:00", "02:00", 2, 0, False),
        ("22:00", "02:00", 21, 59, False),
    ],
)
def test_a_maintenance_window_is_judged_in_its_own_time_zone(
    start: str, end: str, hour: int, minute: int, inside: bool
) -> None:
    # New York is UTC-5 in December: local hour H is UTC H+5.
    now = datetime(2026, 12, 5, (hour + 5) % 24, minute, tzinfo=UTC)
    assert in_window(fleet.Window(start, end, "America/New_York"), now) is inside


def test_an_action_named_dot_dot_downloads_inside_staging_and_leaves_the_data_dir_whole(device: Device) -> None:
    bundle = device.publish("1.0.0")
    action = fleet.Action("..", fleet.ActionKind.INSTALL, "d1", device.app(), "1.0.0")
    device.plane.sources[".."] = bundle.sources([fleet.EdgeOffer("plane", device.plane.url)])
    device.flow().start(action)
    assert device.plane.final("..").state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert (device.data_dir / "identity.json").is_file() and (device.data_dir / "gnupg").is_dir()
    assert_whole(device, bundle)


def test_a_control_plane_down_when_sources_are_needed_leaves_the_action_waiting_not_failed(device: Device) -> None:
    bundle = device.publish("1.0.0")
    action = device.action(bundle)
    device.plane.down = True
    flow = device.flow()
    flow.start(action)
    entry = Journal(device.data_dir).load()
    assert entry is not None and entry.step == Step.DOWNLOADING
    assert device.installer.current_version() is None
    device.plane.down = False
    flow.resume(entry, after_crash=False)
    assert device.plane.states(action.action_id) == SUCCESS  # never "failed" on the way
    assert_whole(device, bundle)


def test_the_sources_answer_cannot_add_a_file_or_change_what_a_file_must_be(device: Device) -> None:
    bundle = device.publish("1.0.0")
    action = device.action(bundle)
    honest = device.plane.sources[action.action_id]
    assert isinstance(honest, fleet.Sources)
    device.plane.serve_file("artifactory-edge-uploads/till-app/1.0.0/extra.sh", b"rm -rf /\n")
    lies = [fleet.FileSource(f.path, f.size + 1, "0" * 64, f.token) for f in honest.files]
    lies.append(fleet.FileSource("artifactory-edge-uploads/till-app/1.0.0/extra.sh", 9, "1" * 64, "t"))
    device.plane.sources[action.action_id] = replace(honest, files=tuple(lies))
    device.flow().start(action)
    assert device.plane.final(action.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert_whole(device, bundle)
    assert sorted(p.name for p in (device.install_dir / "current").iterdir()) == ["app.py", "restart.sh"]


def test_a_signed_manifest_of_another_version_is_refused(device: Device) -> None:
    old, new = device.publish("1.0.0"), device.publish("2.0.0")
    action = device.action(new)
    device.plane.sources[action.action_id] = replace(
        device.plane.sources[action.action_id],  # type: ignore[arg-type]
        manifest=old.manifest,
        signature=old.signature,
    )
    device.flow().start(action)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED and final.step == fleet.FlowStep.VERIFY
    assert "the signed manifest is till-app 1.0.0, not till-app 2.0.0" in final.message
    assert device.installer.current_version() is None
