"""Apps over REST: how each installs on devices, defined once, refused when malformed."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.keys import app_store_key
from repository.errors import Conflict
from tests.conftest import admin
from tests.fleet_setup import (
    fleet_fixture,  # noqa: F401  (fixture 'fleet')
    refusal,
    role_headers,
    stored,
)
from wire.fleet import FLEET_API, AppSpec, HealthCheck

APPS = f"{FLEET_API}/apps"
TILL = {
    "name": "till",
    "bundle": "till-app",
    "install_dir": "/opt/till",
    "restart": "systemctl restart till",
    "health": {"url": "http://127.0.0.1:9000/health", "timeout": 30},
}


async def test_an_app_is_created_once_and_read_back(fleet: Any) -> None:
    assert (await fleet.post(APPS, json=TILL, headers=admin())).status == 201
    again = await fleet.post(APPS, json=TILL, headers=admin())
    assert again.status == 200  # a retry after a time-out is a success
    body = await (await fleet.get(f"{APPS}/till", headers=admin())).json()
    assert body == {**TILL, "pre_install": None, "keep": 3, "health": {**TILL["health"], "command": None}}
    assert [a["name"] for a in await (await fleet.get(APPS, headers=admin())).json()] == ["till"]
    spec = await fleet.app[app_store_key].get_app("till")
    assert spec == AppSpec(
        "till", "till-app", "/opt/till", None, "systemctl restart till", HealthCheck(None, TILL["health"]["url"], 30)
    )
    assert await fleet.app[app_store_key].get_app("nope") is None


async def test_the_same_name_with_other_fields_is_409_unless_replaced(fleet: Any) -> None:
    await fleet.post(APPS, json=TILL, headers=admin())
    before = await stored(fleet)
    other = {**TILL, "install_dir": "/srv/till"}
    status, message = await refusal(await fleet.post(APPS, json=other, headers=admin()))
    assert status == 409 and "PUT" in message
    assert await stored(fleet) == before
    replaced = await fleet.put(f"{APPS}/till", json={k: v for k, v in other.items() if k != "name"}, headers=admin())
    assert replaced.status == 200
    assert (await (await fleet.get(f"{APPS}/till", headers=admin())).json())["install_dir"] == "/srv/till"
    assert (await fleet.put(f"{APPS}/kiosk", json={**TILL, "name": "kiosk"}, headers=admin())).status == 201


async def test_an_app_is_deleted_unless_the_rollout_side_objects(fleet: Any) -> None:
    await fleet.post(APPS, json=TILL, headers=admin())
    await fleet.post(APPS, json={**TILL, "name": "kiosk"}, headers=admin())

    async def in_use(name: str) -> None:
        if name == "till":
            raise Conflict("App 'till' is used by deployment 7")

    fleet.app[app_store_key].add_delete_check(in_use)
    status, message = await refusal(await fleet.delete(f"{APPS}/till", headers=admin()))
    assert (status, message) == (409, "App 'till' is used by deployment 7")
    assert (await fleet.delete(f"{APPS}/kiosk", headers=admin())).status == 204
    assert (await refusal(await fleet.delete(f"{APPS}/kiosk", headers=admin())))[0] == 404
    assert (await refusal(await fleet.get(f"{APPS}/kiosk", headers=admin())))[0] == 404
    assert [a["name"] for a in await (await fleet.get(APPS, headers=admin())).json()] == ["till"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "a b"}, "app name"),
        ({"bundle": ""}, "bundle"),
        ({"install_dir": "opt/till"}, "install_dir"),
        ({"health": {"url": "http://x", "command": "true"}}, "health"),
        ({"health": {}}, "health"),
        ({"health": {"url": "ftp://x"}}, "health url"),
        ({"health": {"url": "http://x", "timeout": 0}}, "health timeout"),
        ({"health": {"url": "http://x", "retries": 3}}, "health.retries"),
        ({"keep": 1}, "keep"),
        ({"keep": 101}, "keep"),
        ({"restart": "a\x00b"}, "restart"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_bad_app_is_a_400_naming_the_field(fleet: Any, change: dict[str, Any], field: str) -> None:
    before = await stored(fleet)
    status, message = await refusal(await fleet.post(APPS, json={**TILL, **change}, headers=admin()))
    assert status == 400 and field in message, message
    assert await stored(fleet) == before


@pytest.mark.parametrize("keep", [2, 3, 99, 100])
async def test_kept_versions_range_from_two_to_a_hundred(fleet: Any, keep: int) -> None:
    assert (await fleet.post(APPS, json={**TILL, "keep": keep}, headers=admin())).status == 201


async def test_a_reader_may_read_apps_and_a_distributor_may_define_them(fleet: Any) -> None:
    reader = await role_headers(fleet, "reader")
    assert (await refusal(await fleet.post(APPS, json=TILL, headers=reader)))[0] == 403
    assert (await stored(fleet))["fleet_apps"] == []
    distributor = await role_headers(fleet, "distributor")
    assert (await fleet.post(APPS, json=TILL, headers=distributor)).status == 201
    assert (await refusal(await fleet.delete(f"{APPS}/till", headers=reader)))[0] == 403
    assert (await fleet.get(APPS, headers=reader)).status == 200
    assert (await refusal(await fleet.get(APPS)))[0] == 401
