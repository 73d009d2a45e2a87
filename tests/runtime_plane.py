"""The control plane with a signed release ``app`` 2.3.0 and devices ``till-1`` (group pos) and
``till-2`` (lab), kept to 2 reports of history and 3 events; and the calls runtime tests make.

    from tests.runtime_plane import plane_fixture  # noqa: F401
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from repository.http.setup import database
from tests.conftest import ADMIN_TOKEN, admin
from tests.fleet_deploy import FILES, REPO, signed_release
from tests.fleet_rows import add_device, device_auth
from wire.runtime import RUNTIME, Process, RuntimeReport

BASE = "/fleet/api/v1/runtime"
TILL = hashlib.sha256(FILES["till.bin"]).hexdigest()
README = hashlib.sha256(FILES["README.md"]).hexdigest()
ROGUE = hashlib.sha256(b"not from any bundle").hexdigest()
TABLES = (
    "fleet_runtime_state",
    "fleet_runtime_processes",
    "fleet_runtime_changes",
    "fleet_runtime_drift",
    "fleet_runtime_events",
)


def till(pid: int = 10, started: int = 1000) -> Process:
    return Process(pid, started, "/opt/till/current/till.bin", TILL, "till", cmdline="till.bin --serve")


def rogue(pid: int = 20, started: int = 2000) -> Process:
    return Process(pid, started, "/tmp/sleep", ROGUE, "root")


@pytest.fixture(name="plane")
async def plane_fixture(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist",
        port=0,
        admin_token=ADMIN_TOKEN,
        repos=(REPO,),
        fleet_runtime_history=2,
        fleet_runtime_events=3,
    )
    client = await aiohttp_client(create_app(settings))
    await signed_release(client, "2.3.0")
    await add_device(client.app, "till-1", group="pos")
    await add_device(client.app, "till-2", group="lab")
    return client


async def send(client: Any, name: str, report: RuntimeReport) -> Any:
    resp = await client.post(RUNTIME, json=report.to_json(), headers=device_auth(name))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def get(client: Any, path: str, **query: str) -> Any:
    resp = await client.get(BASE + path, params=query, headers=admin())
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def rows(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    db = client.app[database]

    def read() -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted(tuple(r) for r in db.db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}

    return await db.read(read)
