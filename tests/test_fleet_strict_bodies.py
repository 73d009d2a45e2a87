"""Every JSON write API of the fleet takes strict JSON, as the service's others do
(tests/test_strict_bodies.py): an unknown key and ``NaN`` in any field are each a 400 in
Artifactory's error shape, and the database is exactly as before; the same app then accepts
the valid body, so a refusal is the mutation's doing. (Optional fields of the fleet's bodies
may be ``null``, meaning "not given", as in ``wire.fleet``.) Device calls carry a real
enrolled device's credential."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, admin
from tests.fleet_deploy import FILES, REPO, signed_release
from tests.fleet_rows import add_app
from tests.fleet_setup import check_in, create_token, enroll
from tests.test_strict_bodies import json_operations
from wire.fleet import CheckIn, device_headers

DEVICE = "till-0001"
WRITE_OPERATIONS = sorted(op for op in json_operations("distribution") if op[1].startswith("/fleet/"))


def bodies(token: str, action_id: str) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """A body each fleet write API accepts, with the concrete path it is sent to."""
    app = {"name": "till", "bundle": "app", "install_dir": "/opt/till", "keep": 3}
    beat = {
        "agent_version": "1.0",
        "uptime": 1,
        "cpu_percent": 1,
        "memory_total": 10,
        "memory_used": 1,
        "disk_total": 10,
        "disk_free": 5,
    }
    return {
        ("POST", "/fleet/api/v1/apps"): ("/fleet/api/v1/apps", app | {"name": "kiosk"}),
        ("PUT", "/fleet/api/v1/apps/{name}"): ("/fleet/api/v1/apps/till", app | {"keep": 4}),
        ("POST", "/fleet/api/v1/deployments"): (
            "/fleet/api/v1/deployments",
            {"app": "till", "version": "2.3.0", "targets": {"groups": ["pos-emea"]}},
        ),
        ("POST", "/fleet/api/v1/device/check-in"): ("/fleet/api/v1/device/check-in", beat),
        ("POST", "/fleet/api/v1/device/enroll"): ("/fleet/api/v1/device/enroll", {"token": token, "name": "till-0002"}),
        ("POST", "/fleet/api/v1/device/feedback"): (
            "/fleet/api/v1/device/feedback",
            {"action_id": action_id, "state": "downloading", "bytes_done": 0},
        ),
        ("POST", "/fleet/api/v1/enrollment-tokens"): (
            "/fleet/api/v1/enrollment-tokens",
            {"group": "kiosks", "expires_in": 3600},
        ),
        ("PUT", "/fleet/api/v1/devices/{name}"): (f"/fleet/api/v1/devices/{DEVICE}", {"poll_interval": 5}),
        ("PUT", "/fleet/api/v1/groups/{group}"): ("/fleet/api/v1/groups/pos-emea", {"poll_interval": 5}),
        ("POST", "/fleet/api/v1/device/runtime"): (
            "/fleet/api/v1/device/runtime",
            {"device": DEVICE, "seq": 1, "base": 0, "time": 1, "started": [], "truncated": False},
        ),
        ("PUT", "/fleet/api/v1/runtime/groups/{group}"): (
            "/fleet/api/v1/runtime/groups/pos-emea",
            {"enabled": True, "interval": 60},
        ),
    }


def rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        kept = [t for t in tables if t != "sqlite_sequence"]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in kept}


def test_every_fleet_json_write_api_has_a_valid_body_here() -> None:
    assert set(bodies("t", "a")) == set(WRITE_OPERATIONS)


@pytest.mark.parametrize("operation", WRITE_OPERATIONS, ids=" ".join)
async def test_a_fleet_write_api_refuses_unknown_keys_and_nan(
    operation: tuple[str, str], aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    client = await aiohttp_client(create_app(settings))
    await add_app(client.app)
    await signed_release(client, "2.3.0", FILES)
    token = (await create_token(client, "pos-emea"))["token"]
    credential = (await (await enroll(client, token, DEVICE)).json())["credential"]
    deployment = await client.post(
        "/fleet/api/v1/deployments",
        json={"app": "till", "version": "2.3.0", "targets": {"devices": [DEVICE]}},
        headers=admin(),
    )
    assert deployment.status == 201, await deployment.text()
    (action,) = CheckIn.from_json(await (await check_in(client, credential)).json()).actions
    method, path = operation
    concrete, body = bodies(token, action.action_id)[operation]
    headers = device_headers(credential) if "/device/" in path else admin()
    before = rows(settings.database_path)
    mutations = {"an unknown key": body | {"surplus": 1}} | {f"NaN in {k}": body | {k: math.nan} for k in body}
    for what, mutated in mutations.items():
        resp = await client.request(
            method,
            concrete,
            data=json.dumps(mutated, allow_nan=True),
            headers={**headers, "Content-Type": "application/json"},
        )
        answer = await resp.json()
        assert resp.status == 400, f"{method} {path} with {what}: {resp.status} {answer}"
        assert answer["errors"][0]["status"] == 400, answer
        assert rows(settings.database_path) == before, f"{method} {path} with {what} changed stored state"
    accepted = await client.request(method, concrete, json=body, headers=headers)
    assert accepted.status < 300, f"{method} {path}: the valid body got {accepted.status} {await accepted.text()}"
