"""What the update flow keeps for drift checks: each installed version's file list from its
verified manifest, dropped with the version. The flow runs against the control-plane double."""

from __future__ import annotations

import hashlib

import pytest

from agent.drift import DriftChecker, kept_files
from tests.agent_device import Device, device_fixture, plane_fixture  # noqa: F401
from tests.gpg_keys import key_factory_fixture, keys_fixture  # noqa: F401


def test_an_install_keeps_the_verified_file_list_and_an_edited_file_is_drift(device: Device) -> None:
    bundle = device.publish("1.0.0")
    device.install(bundle)
    expected = {target.rsplit("/", 1)[1]: hashlib.sha256(data).hexdigest() for target, data in bundle.files.items()}
    assert kept_files(device.data_dir, "till", "1.0.0") == expected
    (drift,) = DriftChecker(device.data_dir, 0).check()
    assert drift.findings() == []
    (device.install_dir / "versions" / "1.0.0" / "restart.sh").write_text("echo changed\n")
    (drift,) = DriftChecker(device.data_dir, 0).check()
    assert (drift.version, drift.findings()) == ("1.0.0", [("modified", "restart.sh")])


@pytest.mark.parametrize("installs", [3, 4])  # keep, keep + 1
def test_the_file_list_of_a_version_the_device_removed_is_dropped_with_it(device: Device, installs: int) -> None:
    versions = [f"{n}.0.0" for n in range(1, installs + 1)]
    for version in versions:
        device.install(device.publish(version))
    assert [v for v in versions if kept_files(device.data_dir, "till", v) is not None] == versions[-3:]


def test_a_version_that_failed_and_was_rolled_back_leaves_no_file_list(device: Device) -> None:
    device.install(device.publish("1.0.0"))
    device.install(device.publish("2.0.0", healthy=False))
    assert kept_files(device.data_dir, "till", "2.0.0") is None
    assert kept_files(device.data_dir, "till", "1.0.0") is not None
    (drift,) = DriftChecker(device.data_dir, 0).check()
    assert (drift.version, drift.findings()) == ("1.0.0", [])
