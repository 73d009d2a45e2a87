"""An enrolled device in a temp dir, the app it installs, and the bundles a test publishes to the
control-plane double; fixtures ``plane`` and ``device`` for the agent's flow tests."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.flow import Flow
from agent.installer import Installer
from tests.agent_plane import (
    Bundle,
    ControlPlane,
    app_files,
    enrolled_device,
    free_port,
    make_bundle,
    make_flow,
    start_plane,
    stop_app,
)
from tests.gpg_keys import KeyFactory, KeySet
from wire import fleet

SUCCESS = ["downloading", "downloaded", "installing", "restarting", "checking", "succeeded"]


class Device:
    """An enrolled device, the app it installs, and the bundles the test publishes."""

    def __init__(
        self, tmp_path: Path, plane: ControlPlane, key_factory: KeyFactory, keys: KeySet, data_dir: Path | None = None
    ) -> None:
        self.plane, self.key_factory, self.keys = plane, key_factory, keys
        self.data_dir = data_dir or tmp_path / "agent"
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.install_dir = tmp_path / "opt" / "till"
        self.port = free_port()
        enrolled_device(self.data_dir, plane.url, [keys.alice])
        self.count = 0

    def app(self, *, health: fleet.HealthCheck | None = None, keep: int = 3, **commands: str) -> fleet.AppSpec:
        health = health or fleet.HealthCheck(url=f"http://127.0.0.1:{self.port}/health", timeout=30)
        restart = commands.pop("restart", "sh restart.sh")
        return fleet.AppSpec(
            "till", "till-app", str(self.install_dir), restart=restart, health=health, keep=keep, **commands
        )

    def publish(
        self,
        version: str,
        *,
        healthy: bool = True,
        restart_extra: str = "",
        signer: str = "alice",
        extra: dict[str, bytes] | None = None,
    ) -> Bundle:
        files = app_files(version, self.run_dir, self.port, healthy=healthy, restart_extra=restart_extra)
        files |= extra or {}
        bundle = make_bundle(self.key_factory, getattr(self.keys, signer), "till-app", version, files)
        for target, data in bundle.files.items():
            self.plane.serve_file(target, data)
        return bundle

    def action(
        self,
        bundle: Bundle | None,
        version: str | None = None,
        *,
        kind: fleet.ActionKind = fleet.ActionKind.INSTALL,
        app: fleet.AppSpec | None = None,
        **extra: object,
    ) -> fleet.Action:  # noqa: E501
        self.count += 1
        action_id = f"a{self.count}"
        if bundle is not None:
            self.plane.sources[action_id] = bundle.sources([fleet.EdgeOffer("plane", self.plane.url)])
        version = bundle.version if bundle is not None else version
        return fleet.Action(action_id, kind, "d1", app or self.app(), version, **extra)  # type: ignore[arg-type]

    def flow(self, **kwargs: object) -> Flow:
        return make_flow(self.data_dir, **kwargs)  # type: ignore[arg-type]

    def install(self, bundle: Bundle, **kwargs: object) -> fleet.Action:
        action = self.action(bundle, **kwargs)  # type: ignore[arg-type]
        self.flow().start(action)
        return action

    def answer(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as resp:
            return resp.read().decode()

    @property
    def installer(self) -> Installer:
        return Installer(self.app())


@pytest.fixture(name="plane")
def plane_fixture(tmp_path: Path) -> Iterator[ControlPlane]:
    yield from start_plane(tmp_path)


@pytest.fixture(name="device")
def device_fixture(tmp_path: Path, plane: ControlPlane, key_factory: KeyFactory, keys: KeySet) -> Iterator[Device]:
    dev = Device(tmp_path, plane, key_factory, keys)
    try:
        yield dev
    finally:
        stop_app(dev.run_dir)


def assert_whole(device: Device, bundle: Bundle) -> None:
    """``current`` names ``bundle``'s version, and every file there is the signed one."""
    assert device.installer.current_version() == bundle.version
    for target, data in bundle.files.items():
        installed = device.install_dir / "current" / target.rsplit("/", 1)[1]
        assert hashlib.sha256(installed.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
