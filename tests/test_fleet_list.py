"""The fleet list: filters by group, tag, online, app and version, paged by name."""

from __future__ import annotations

from typing import Any

import pytest

from fleet import device_store
from tests.conftest import admin
from tests.fleet_setup import (
    check_in,
    create_token,
    enroll,
    fleet_fixture,  # noqa: F401  (fixture 'fleet')
    heartbeat,
    refusal,
    role_headers,
)
from wire.fleet import FLEET_API, MAX_PAGE

DEVICES = f"{FLEET_API}/devices"


async def names(client: Any, **query: Any) -> list[str]:
    resp = await client.get(DEVICES, params=query, headers=admin())
    assert resp.status == 200, await resp.text()
    return [d["name"] for d in (await resp.json())["devices"]]


async def small_fleet(client: Any) -> None:
    """till-1 (lisbon, till 2.3.0), till-2 (lisbon, till 2.4.0), till-3 (porto, never checked in),
    kiosk-1 (another group, till 2.3.0 and printer 1.0)."""
    emea = await create_token(client, "pos-emea", tags={"country": "PT"})
    kiosks = await create_token(client, "kiosks")
    for name, token, tags, apps in [
        ("till-1", emea, {"city": "lisbon"}, {"till": "2.3.0"}),
        ("till-2", emea, {"city": "lisbon"}, {"till": "2.4.0"}),
        ("till-3", emea, {"city": "porto"}, None),
        ("kiosk-1", kiosks, {"city": "porto"}, {"till": "2.3.0", "printer": "1.0"}),
    ]:
        resp = await enroll(client, token["token"], name, tags=tags)
        if apps is not None:
            await check_in(client, (await resp.json())["credential"], heartbeat(apps=apps))


async def test_the_fleet_list_filters_by_group_tag_online_app_and_version(fleet: Any) -> None:
    await small_fleet(fleet)
    assert await names(fleet) == ["kiosk-1", "till-1", "till-2", "till-3"]
    assert await names(fleet, group="pos-emea") == ["till-1", "till-2", "till-3"]
    assert await names(fleet, tag="city=porto") == ["kiosk-1", "till-3"]
    assert await names(fleet, tag=["city=lisbon", "country=PT"]) == ["till-1", "till-2"]
    assert await names(fleet, tag="country=ES") == []
    assert await names(fleet, online="true") == ["kiosk-1", "till-1", "till-2"]
    assert await names(fleet, online="false") == ["till-3"]
    assert await names(fleet, app="printer") == ["kiosk-1"]
    assert await names(fleet, app="till", version="2.3.0") == ["kiosk-1", "till-1"]
    assert await names(fleet, version="2.4.0") == ["till-2"]
    assert await names(fleet, group="pos-emea", app="till", version="2.3.0", online="true") == ["till-1"]


async def test_each_device_shows_what_it_last_reported(fleet: Any) -> None:
    await small_fleet(fleet)
    devices = (await (await fleet.get(DEVICES, params={"group": "kiosks"}, headers=admin())).json())["devices"]
    (kiosk,) = devices
    assert kiosk["apps"] == {
        "printer": {"version": "1.0", "previous": None},
        "till": {"version": "2.3.0", "previous": None},
    }
    assert kiosk["tags"] == {"city": "porto"} and kiosk["group"] == "kiosks" and kiosk["online"] is True
    assert (kiosk["cpu_percent"], kiosk["memory_used"], kiosk["disk_free"], kiosk["uptime"]) == (
        5,
        1 << 28,
        1 << 33,
        3600,
    )
    assert kiosk["last_seen"].endswith("Z") and kiosk["agent_version"] == "1.0.0" and kiosk["action"] is None
    (never,) = (
        await (await fleet.get(DEVICES, params={"tag": "city=porto", "group": "pos-emea"}, headers=admin())).json()
    )["devices"]
    assert (never["last_seen"], never["cpu_percent"], never["apps"]) == (None, None, {})


async def test_a_device_is_offline_after_three_missed_intervals(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await small_fleet(fleet)
    now = device_store.now_ms()
    monkeypatch.setattr(device_store, "now_ms", lambda: now + 3 * 30_000 - 1000)
    assert await names(fleet, online="true") == ["kiosk-1", "till-1", "till-2"]
    monkeypatch.setattr(device_store, "now_ms", lambda: now + 3 * 30_000 + 1000)
    assert await names(fleet, online="true") == []
    assert await names(fleet, online="false") == ["kiosk-1", "till-1", "till-2", "till-3"]


@pytest.mark.parametrize("limit", [1, 3, 4, 5])
async def test_pages_follow_each_other_by_name(fleet: Any, limit: int) -> None:
    await small_fleet(fleet)
    seen: list[str] = []
    after: str | None = None
    for _ in range(5):
        query = {"limit": limit, **({"after": after} if after else {})}
        body = await (await fleet.get(DEVICES, params=query, headers=admin())).json()
        assert len(body["devices"]) <= limit
        seen += [d["name"] for d in body["devices"]]
        after = body["next"]
        if after is None:
            break
    assert seen == ["kiosk-1", "till-1", "till-2", "till-3"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": 0}, 400),
        ({"limit": 1}, 200),
        ({"limit": MAX_PAGE - 1}, 200),
        ({"limit": MAX_PAGE}, 200),
        ({"limit": MAX_PAGE + 1}, 400),
        ({"limit": "ten"}, 400),
        ({"online": "yes"}, 400),
        ({"tag": "city"}, 400),
        ({"group": "a b"}, 400),
        ({"colour": "red"}, 400),
    ],
)
async def test_list_parameters_are_checked(fleet: Any, query: dict[str, Any], status: int) -> None:
    resp = await fleet.get(DEVICES, params=query, headers=admin())
    if status == 200:
        assert resp.status == 200
    else:
        assert (await refusal(resp))[0] == 400


async def test_the_fleet_list_needs_a_token(fleet: Any) -> None:
    assert (await refusal(await fleet.get(DEVICES)))[0] == 401
    assert (await fleet.get(DEVICES, headers=await role_headers(fleet, "reader"))).status == 200
