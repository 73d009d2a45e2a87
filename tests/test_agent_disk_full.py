"""A full disk on the device: the download fails cleanly (FAILED at download, staging removed),
and the running version is untouched. The data dir sits on a small tmpfs the kernel fills."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.flow import staging_dir
from tests import test_disk_full
from tests.agent_device import Device, assert_whole, plane_fixture  # noqa: F401
from tests.agent_plane import ControlPlane, stop_app
from tests.gpg_keys import KeyFactory, KeySet, key_factory_fixture, keys_fixture  # noqa: F401
from wire import fleet

small_disk = test_disk_full.small_disk  # the fixture: a small tmpfs mounted for the test
MiB = 1024 * 1024


@pytest.fixture(name="device")
def device_fixture(
    small_disk: Path, tmp_path: Path, plane: ControlPlane, key_factory: KeyFactory, keys: KeySet
) -> Iterator[Device]:
    dev = Device(tmp_path, plane, key_factory, keys, data_dir=small_disk / "agent")
    try:
        yield dev
    finally:
        stop_app(dev.run_dir)


def test_a_download_that_fills_the_disk_fails_cleanly_and_the_running_version_stays(device: Device) -> None:
    good = device.publish("1.0.0")
    device.install(good)
    too_big = device.publish("2.0.0", extra={"data.bin": os.urandom(test_disk_full.DISK + MiB)})
    action = device.install(too_big)
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.FAILED
    assert final.step == fleet.FlowStep.DOWNLOAD and "disk full" in final.message and not final.rolled_back
    assert not staging_dir(device.data_dir, action.action_id).exists()
    assert_whole(device, good)
    assert device.answer() == "1.0.0"
    again = device.install(device.publish("2.0.1"))  # with room again, the next update works
    assert device.plane.final(again.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
