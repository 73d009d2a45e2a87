"""The Distribution service in-process with app ``till``, and the calls the rollout side's tests
make: sign a release, deploy, check in as a device, report feedback.

    from tests.fleet_deploy import fleet_fixture  # noqa: F401
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from fleet.devices import Device
from fleet.keys import action_source_key
from tests.conftest import ADMIN_TOKEN, admin
from tests.fleet_rows import add_app, device_auth
from wire.fleet import FEEDBACK, Action, Heartbeat, InstalledApp

V1 = "/distribution/api/v1"
FLEET = "/fleet/api/v1"
REPO = "releases-local"
FILES = {"till.bin": b"\x7fELF" + b"t" * 5000, "README.md": b"# till\n"}


@pytest.fixture(name="fleet")
async def fleet_fixture(aiohttp_client: Any, tmp_path: Path) -> Any:
    """The service in-process (a real port), with app ``till`` defined (bundle ``app``)."""
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    client = await aiohttp_client(create_app(settings))
    await add_app(client.app)
    return client


async def signed_release(client: Any, version: str, files: dict[str, bytes] = FILES, sign: bool = True) -> None:
    for path, data in files.items():
        resp = await client.put(f"/artifactory/{REPO}/app/{version}/{path}", data=io.BytesIO(data), headers=admin())
        assert resp.status == 201, await resp.text()
    body = {"name": "app", "version": version, "sign_immediately": sign}
    body["spec"] = {"queries": [{"pattern": f"{REPO}/app/{version}/*"}]}
    resp = await client.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert resp.status == 201, await resp.text()


async def deploy(client: Any, expect: int = 201, **fields: Any) -> dict[str, Any]:
    body = {"app": "till", "version": "2.3.0", "targets": {"groups": ["pos"]}} | fields
    resp = await client.post(f"{FLEET}/deployments", json=body, headers=admin())
    assert resp.status == expect, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def status(client: Any, dep_id: int, **query: Any) -> dict[str, Any]:
    resp = await client.get(f"{FLEET}/deployments/{dep_id}", params=query, headers=admin())
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def heartbeat(apps: dict[str, str | None] | None = None, action: Any = None) -> Heartbeat:
    return Heartbeat(
        agent_version="1.0",
        uptime=10,
        cpu_percent=1,
        memory_total=1 << 30,
        memory_used=1 << 29,
        disk_total=1 << 34,
        disk_free=1 << 33,
        apps={k: InstalledApp(v) for k, v in (apps or {}).items()},
        action=action,
    )


async def check_in(
    client: Any, name: str, apps: dict[str, str | None] | None = None, action: Any = None
) -> list[Action]:
    """What device ``name`` is told at check-in (the device side calls the same source)."""
    device = Device(f"dev-{name}", name, "pos")
    return await client.app[action_source_key].actions_for(device, heartbeat(apps, action))


async def report(client: Any, name: str, action_id: str, state: str, expect: int = 200, **fields: Any) -> Any:
    resp = await client.post(
        FEEDBACK, json={"action_id": action_id, "state": state, **fields}, headers=device_auth(name)
    )
    assert resp.status == expect, await resp.text()
    return await resp.json()
