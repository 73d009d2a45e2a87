"""Check-ins: a device's heartbeat stored (committed before the answer, in group commits, with
a bounded history), the poll interval it is told, and identity kept in memory yet refused
at once after a revocation, in this process and in another serving the same database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fleet.heartbeats import HeartbeatWriter
from fleet.keys import action_source_key
from repository.http.setup import database
from tests.conftest import admin
from tests.fleet_setup import (
    check_in,
    enrolled,
    fleet_app,
    fleet_fixture,  # noqa: F401  (fixture 'fleet')
    fleet_settings,
    heartbeat,
    refusal,
    stored,
)
from wire.fleet import CHECK_IN, FLEET_API, MAX_POLL_SECONDS, MIN_POLL_SECONDS, CheckIn, device_headers

HISTORY = 5


async def test_a_check_in_stores_the_heartbeat_and_answers_the_interval(fleet: Any) -> None:
    credential = await enrolled(fleet, "till-1")
    resp = await check_in(fleet, credential, heartbeat(cpu=42, apps={"till": "2.3.0"}, agent="1.2.0"))
    assert resp.status == 200
    answer = CheckIn.from_json(await resp.json())
    assert answer.poll_interval == 30 and answer.actions == () and len(answer.keys_digest) == 64
    device = await (await fleet.get(f"{FLEET_API}/devices/till-1", headers=admin())).json()
    assert (device["online"], device["cpu_percent"], device["agent_version"]) == (True, 42, "1.2.0")
    assert device["apps"] == {"till": {"version": "2.3.0", "previous": None}}
    assert [h["heartbeat"]["cpu_percent"] for h in device["history"]] == [42]


async def test_the_rollout_side_is_asked_after_the_heartbeat_is_stored(fleet: Any) -> None:
    credential = await enrolled(fleet, "till-1")
    seen: list[Any] = []
    source = fleet.app[action_source_key]
    asked = source.actions_for

    async def actions_for(device: Any, beat: Any) -> Any:
        seen.append((device.name, (await stored(fleet))["fleet_device_apps"]))
        return await asked(device, beat)

    source.actions_for = actions_for
    await check_in(fleet, credential, heartbeat(apps={"till": "2.3.0"}))
    assert [(name, [(app, version) for _, app, version, _ in rows]) for name, rows in seen] == [
        ("till-1", [("till", "2.3.0")])
    ]


async def test_apps_a_device_no_longer_reports_leave_its_record(fleet: Any) -> None:
    credential = await enrolled(fleet, "till-1")
    await check_in(fleet, credential, heartbeat(apps={"till": "2.3.0", "printer": "1.0"}))
    await check_in(fleet, credential, heartbeat(apps={"till": "2.4.0"}))
    device = await (await fleet.get(f"{FLEET_API}/devices/till-1", headers=admin())).json()
    assert device["apps"] == {"till": {"version": "2.4.0", "previous": None}}


async def test_the_answer_comes_after_the_heartbeat_is_committed(fleet: Any) -> None:
    credential = await enrolled(fleet, "till-1")
    path = fleet.app[database].path
    assert (await check_in(fleet, credential, heartbeat(cpu=77))).status == 200
    # another connection, as another process or a restart after a crash would open the file
    with sqlite3.connect(path) as other:
        rows = other.execute("SELECT body FROM fleet_heartbeats").fetchall()
        seen = other.execute("SELECT last_seen FROM fleet_devices WHERE name = 'till-1'").fetchone()
    assert len(rows) == 1 and '"cpu_percent":77' in rows[0][0] and seen[0] is not None


async def test_check_ins_arriving_together_share_transactions(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = [await enrolled(fleet, f"till-{n}") for n in range(40)]
    transactions: list[int] = []
    store = HeartbeatWriter._store

    def counted(self: HeartbeatWriter, beats: list[Any]) -> None:
        transactions.append(len(beats))
        store(self, beats)

    monkeypatch.setattr(HeartbeatWriter, "_store", counted)
    answers = await asyncio.gather(*(check_in(fleet, c) for c in credentials))
    assert [a.status for a in answers] == [200] * 40
    assert sum(transactions) == 40 and len(transactions) < 40
    devices = (await (await fleet.get(f"{FLEET_API}/devices", headers=admin())).json())["devices"]
    assert all(d["online"] for d in devices) and len(devices) == 40


@pytest.mark.parametrize("sent", [0, 1, HISTORY - 1, HISTORY, HISTORY + 1, 2 * HISTORY])
async def test_the_history_kept_per_device_is_bounded(aiohttp_client: Any, tmp_path: Path, sent: int) -> None:
    client = await aiohttp_client(fleet_app(fleet_settings(tmp_path, fleet_heartbeat_history=HISTORY)))
    credential = await enrolled(client, "till-1")
    other = await enrolled(client, "till-2", group="other")
    for n in range(sent):
        assert (await check_in(client, credential, heartbeat(cpu=n))).status == 200
    await check_in(client, other, heartbeat(cpu=99))
    device = await (await client.get(f"{FLEET_API}/devices/till-1", headers=admin())).json()
    assert [h["heartbeat"]["cpu_percent"] for h in device["history"]] == list(range(sent))[::-1][:HISTORY]
    rows = (await stored(client))["fleet_heartbeats"]
    assert len(rows) == min(sent, HISTORY) + 1  # the other device's one is its own


async def test_a_history_of_zero_keeps_only_the_latest_heartbeat(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(fleet_app(fleet_settings(tmp_path, fleet_heartbeat_history=0)))
    credential = await enrolled(client, "till-1")
    for n in range(3):
        await check_in(client, credential, heartbeat(cpu=n))
    device = await (await client.get(f"{FLEET_API}/devices/till-1", headers=admin())).json()
    assert (device["history"], device["cpu_percent"]) == ([], 2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpu_percent": 101}, "cpu_percent"),
        ({"uptime": -1}, "uptime"),
        ({"apps": {"bad name": {"version": "1"}}}, "app name"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_heartbeat_is_a_400_and_nothing_is_stored(fleet: Any, change: dict[str, Any], field: str) -> None:
    credential = await enrolled(fleet, "till-1")
    before = await stored(fleet)
    body = {**heartbeat().to_json(), **change}
    status, message = await refusal(await fleet.post(CHECK_IN, json=body, headers=device_headers(credential)))
    assert status == 400 and field in message
    assert await stored(fleet) == before


async def test_a_check_in_without_a_known_credential_is_401(fleet: Any) -> None:
    await enrolled(fleet, "till-1")
    before = await stored(fleet)
    status, message = await refusal(await fleet.post(CHECK_IN, json=heartbeat().to_json()))
    assert status == 401 and "X-Device-Token" in message
    status, message = await refusal(await check_in(fleet, "fdc_made-up"))
    assert status == 401 and "Unknown device credential" in message
    assert await stored(fleet) == before


@pytest.mark.parametrize(
    ("seconds", "status"),
    [
        (0, 400),
        (MIN_POLL_SECONDS, 200),
        (MAX_POLL_SECONDS - 1, 200),
        (MAX_POLL_SECONDS, 200),
        (MAX_POLL_SECONDS + 1, 400),
    ],
)
async def test_the_poll_interval_is_set_per_device_within_bounds(fleet: Any, seconds: int, status: int) -> None:
    credential = await enrolled(fleet, "till-1")
    await enrolled(fleet, "till-2")
    assert CheckIn.from_json(await (await check_in(fleet, credential)).json()).poll_interval == 30  # remembered now
    resp = await fleet.put(f"{FLEET_API}/devices/till-1", json={"poll_interval": seconds}, headers=admin())
    assert resp.status == status
    expected = seconds if status == 200 else 30
    assert CheckIn.from_json(await (await check_in(fleet, credential)).json()).poll_interval == expected
    listed = (await (await fleet.get(f"{FLEET_API}/devices", headers=admin())).json())["devices"]
    assert [d["poll_interval"] for d in listed] == [expected, 30]


async def test_the_default_poll_interval_is_a_setting(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(fleet_app(fleet_settings(tmp_path, fleet_poll_interval=300)))
    credential = await enrolled(client, "till-1")
    assert CheckIn.from_json(await (await check_in(client, credential)).json()).poll_interval == 300


async def test_a_device_revoked_through_one_process_is_refused_by_another(aiohttp_client: Any, tmp_path: Path) -> None:
    # two service processes of one node, as `--workers` runs them: one data directory, one sqlite file
    one = await aiohttp_client(fleet_app(fleet_settings(tmp_path)))
    two = await aiohttp_client(fleet_app(fleet_settings(tmp_path)))
    credential = await enrolled(one, "till-1")
    assert (await check_in(two, credential)).status == 200  # now in the other process's memory
    assert (await check_in(two, credential)).status == 200
    assert (await one.post(f"{FLEET_API}/devices/till-1/revoke", headers=admin())).status == 200
    status, message = await refusal(await check_in(two, credential))
    assert status == 401 and "revoked" in message


async def test_a_group_poll_interval_reaches_its_devices_now_and_later(fleet: Any) -> None:
    first = await enrolled(fleet, "till-1", group="pos-emea")
    other = await enrolled(fleet, "kiosk-1", group="kiosks")
    resp = await fleet.put(f"{FLEET_API}/groups/pos-emea", json={"poll_interval": 120}, headers=admin())
    assert await resp.json() == {"group": "pos-emea", "poll_interval": 120, "devices": 1}
    later = await enrolled(fleet, "till-2", group="pos-emea")
    intervals = [
        CheckIn.from_json(await (await check_in(fleet, c)).json()).poll_interval for c in (first, later, other)
    ]
    assert intervals == [120, 120, 30]
    await fleet.put(f"{FLEET_API}/devices/till-2", json={"poll_interval": 60}, headers=admin())  # the device's own
    assert CheckIn.from_json(await (await check_in(fleet, later)).json()).poll_interval == 60
    groups = await (await fleet.get(f"{FLEET_API}/groups", headers=admin())).json()
    assert groups == [
        {"group": "kiosks", "poll_interval": None, "devices": 1},
        {"group": "pos-emea", "poll_interval": 120, "devices": 2},
    ]


@pytest.mark.parametrize(
    ("body", "group"),
    [
        ({"poll_interval": 0}, "pos"),
        ({"poll_interval": MAX_POLL_SECONDS + 1}, "pos"),
        ({"poll_interval": "60"}, "pos"),
        ({"interval": 60}, "pos"),
        ({"poll_interval": 60}, "a b"),
    ],
)
async def test_a_bad_group_setting_is_a_400_and_changes_nothing(fleet: Any, body: dict[str, Any], group: str) -> None:
    await enrolled(fleet, "till-1", group="pos")
    before = await stored(fleet)
    assert (await refusal(await fleet.put(f"{FLEET_API}/groups/{group}", json=body, headers=admin())))[0] == 400
    assert await stored(fleet) == before
    assert (await refusal(await fleet.put(f"{FLEET_API}/groups/pos", json=body)))[0] == 401
