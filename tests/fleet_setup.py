"""The device side of the fleet in-process: a Distribution service app with a stand-in for the
rollout side (a device has nothing to do), and the calls operators and devices make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from repository.http.setup import database
from tests.conftest import ADMIN_TOKEN, admin
from wire.fleet import CHECK_IN, ENROLL, FLEET_API, Heartbeat, InstalledApp, device_headers

TABLES = (
    "fleet_enrollment_tokens",
    "fleet_devices",
    "fleet_device_tags",
    "fleet_device_apps",
    "fleet_heartbeats",
    "fleet_apps",
    "fleet_groups",
)


def fleet_settings(tmp_path: Path, **overrides: Any) -> DistributionSettings:
    return DistributionSettings(**{"data_dir": tmp_path / "dist", "port": 0, "admin_token": ADMIN_TOKEN, **overrides})


def fleet_app(settings: DistributionSettings) -> Any:
    return create_app(settings)


@pytest.fixture(name="fleet")
async def fleet_fixture(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await aiohttp_client(fleet_app(fleet_settings(tmp_path)))


async def role_headers(client: Any, role: str) -> dict[str, str]:
    token = await (await client.post("/access/api/v1/tokens", json={"role": role}, headers=admin())).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


async def create_token(client: Any, group: str = "pos-emea", **body: Any) -> dict[str, Any]:
    resp = await client.post(
        f"{FLEET_API}/enrollment-tokens", json={"group": group, "expires_in": "24h", **body}, headers=admin()
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def enroll(client: Any, token: str, name: str, **body: Any) -> Any:
    return await client.post(ENROLL, json={"token": token, "name": name, **body})


async def enrolled(client: Any, name: str = "till-0042", group: str = "pos-emea", **token_body: Any) -> str:
    """A device enrolled with a new token; its credential."""
    token = await create_token(client, group, **token_body)
    resp = await enroll(client, token["token"], name)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["credential"])


def heartbeat(cpu: int = 5, apps: dict[str, str] | None = None, agent: str = "1.0.0") -> Heartbeat:
    return Heartbeat(
        agent_version=agent,
        uptime=3600,
        cpu_percent=cpu,
        memory_total=1 << 30,
        memory_used=1 << 28,
        disk_total=1 << 34,
        disk_free=1 << 33,
        apps={name: InstalledApp(version) for name, version in (apps or {}).items()},
    )


async def check_in(client: Any, credential: str, beat: Heartbeat | None = None) -> Any:
    return await client.post(CHECK_IN, json=(beat or heartbeat()).to_json(), headers=device_headers(credential))


async def refusal(resp: Any) -> tuple[int, str]:
    """Status and message of an Artifactory-style error body."""
    body = await resp.json()
    assert list(body) == ["errors"] and body["errors"][0]["status"] == resp.status, body
    return resp.status, str(body["errors"][0]["message"])


async def stored(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the fleet's device tables, to show a refusal changed nothing."""
    db = client.app[database]

    def read() -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted(tuple(r) for r in db.db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}

    return await db.read(read)
