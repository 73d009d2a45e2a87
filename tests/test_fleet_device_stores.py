"""The fleet's device stores answer the same on both engines the service may keep its state in:
sqlite and a real PostgreSQL (``db_target``): enrollment, heartbeats with their bounded
history, the fleet list's filters, revocation, apps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet.apps import AppStore
from fleet.device_schema import device_migrations
from fleet.device_store import DeviceStore, FleetFilter
from fleet.devices import DeviceLookup
from fleet.enrollment import Enroller
from fleet.enrollment_tokens import EnrollmentTokenStore
from fleet.heartbeats import Beat, HeartbeatWriter, writer_ctx
from repository.db import Database
from repository.entries import now_ms
from repository.errors import Conflict, Unauthorized
from tests.fleet_setup import heartbeat
from wire.fleet import AppSpec, EnrollRequest

HISTORY = 3


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(device_migrations)
    yield db
    await db.close()


async def enroll(database: Database, *names: str, tags: dict[str, str] | None = None) -> list[str]:
    tokens = EnrollmentTokenStore(database)
    _, secret = await tokens.create("pos", {"country": "PT"}, 3600, "admin")
    enroller = Enroller(database, tokens, DeviceLookup(database))
    found = [await enroller.enroll(EnrollRequest(secret, name, tags or {}), 30) for name in names]
    return [device.id for device, _ in found]


async def test_heartbeats_keep_a_bounded_history_on_both_engines(database: Database) -> None:
    (device_id,) = await enroll(database, "till-1")
    writer = HeartbeatWriter(database, HISTORY)
    now = now_ms()
    async for _ in writer_ctx(writer):
        # the same millisecond each time: every heartbeat is kept all the same
        await asyncio.gather(*(writer.write(Beat(device_id, heartbeat(cpu=n), now)) for n in range(HISTORY + 2)))
        await writer.write(Beat(device_id, heartbeat(cpu=50, apps={"till": "2.0"}), now))
        break
    store = DeviceStore(database, DeviceLookup(database), 3)
    device = await store.get("till-1")
    assert [h["heartbeat"]["cpu_percent"] for h in device["history"]] == [50, HISTORY + 1, HISTORY][:HISTORY]
    assert device["apps"] == {"till": {"version": "2.0", "previous": None}} and device["online"] is True


async def test_what_a_device_runs_follows_its_heartbeats_through_either_replica(
    database: Database, db_target: str, tmp_path: Path
) -> None:
    """Apps rows are rewritten only when a heartbeat's apps differ from the stored ones; a
    second process on the same database sees what the first stored, so nothing goes stale."""
    (device_id,) = await enroll(database, "till-1")
    other = Database(db_target, local_dir=tmp_path / "other")
    await other.open(device_migrations)
    store = DeviceStore(database, DeviceLookup(database), 3)
    reports = [
        (database, {"till": "1.0"}),
        (other, {"till": "1.0"}),
        (other, {"till": "2.0", "printer": "1.0"}),
        (database, {"till": "2.0", "printer": "1.0"}),
        (database, {"till": "1.0"}),
        (other, {}),
        (database, {"till": "3.0"}),
    ]
    try:
        for db, apps in reports:
            writer = HeartbeatWriter(db, HISTORY)
            async for _ in writer_ctx(writer):
                await writer.write(Beat(device_id, heartbeat(apps=apps), now_ms()))
                break
            device = await store.get("till-1")
            assert {app: v["version"] for app, v in device["apps"].items()} == apps
            for app, version in apps.items():
                found, _ = await store.page(FleetFilter(app=app, version=version))
                assert [d["name"] for d in found] == ["till-1"]
    finally:
        await other.close()


async def test_only_the_last_of_a_devices_heartbeats_in_one_batch_says_what_it_runs(database: Database) -> None:
    (device_id,) = await enroll(database, "till-1")
    writer = HeartbeatWriter(database, HISTORY)
    now = now_ms()
    for versions in (("1.0", "2.0", "1.0"), ("1.0", "2.0")):  # one transaction each
        await database.run(writer.store, [Beat(device_id, heartbeat(apps={"till": v}), now) for v in versions])
    device = await DeviceStore(database, DeviceLookup(database), 3).get("till-1")
    assert device["apps"] == {"till": {"version": "2.0", "previous": None}}


async def test_the_fleet_filters_answer_the_same_on_both_engines(database: Database) -> None:
    ids = await enroll(database, "till-1", "till-2", "till-3", tags={"city": "lisbon"})
    writer = HeartbeatWriter(database, HISTORY)
    async for _ in writer_ctx(writer):
        await writer.write(Beat(ids[0], heartbeat(apps={"till": "2.3.0"}), now_ms()))
        await writer.write(Beat(ids[1], heartbeat(apps={"till": "2.4.0"}), now_ms()))
        break
    store = DeviceStore(database, DeviceLookup(database), 3)

    async def names(**wanted: object) -> list[str]:
        devices, _ = await store.page(FleetFilter(**wanted))  # type: ignore[arg-type]
        return [d["name"] for d in devices]

    assert await names(tags={"city": "lisbon", "country": "PT"}) == ["till-1", "till-2", "till-3"]
    assert await names(online=True) == ["till-1", "till-2"]
    assert await names(online=False) == ["till-3"]
    assert await names(app="till", version="2.4.0") == ["till-2"]
    devices, next_name = await store.page(FleetFilter(limit=2))
    assert [d["name"] for d in devices] == ["till-1", "till-2"] and next_name == "till-2"
    assert await names(after="till-2") == ["till-3"]
    await store.revoke("till-1")
    assert await names(online=True) == ["till-2"]


async def test_enrollment_refusals_store_nothing_on_both_engines(database: Database) -> None:
    tokens = EnrollmentTokenStore(database)
    token, secret = await tokens.create("pos", {}, 3600, "admin")
    lookup = DeviceLookup(database)
    enroller = Enroller(database, tokens, lookup)
    device, credential = await enroller.enroll(EnrollRequest(secret, "till-1"), 30)
    assert await lookup.by_credential(credential) == device
    with pytest.raises(Conflict):
        await enroller.enroll(EnrollRequest(secret, "till-1"), 30)
    await tokens.revoke(token.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await enroller.enroll(EnrollRequest(secret, "till-2"), 30)
    assert [t.used for t in await tokens.list()] == [1]
    store = DeviceStore(database, lookup, 3)
    assert [d["name"] for d in (await store.page(FleetFilter()))[0]] == ["till-1"]


async def test_apps_are_stored_the_same_on_both_engines(database: Database) -> None:
    apps = AppStore(database)
    spec = AppSpec("till", "till-app", "/opt/till", restart="systemctl restart till", keep=5)
    assert await apps.create(spec) is True
    assert await apps.create(spec) is False
    with pytest.raises(Conflict):
        await apps.create(AppSpec("till", "other", "/opt/till"))
    assert await apps.get_app("till") == spec
    await apps.delete("till")
    assert await apps.list() == []


async def test_a_device_revoked_on_one_replica_is_refused_by_another(postgres_url: str, tmp_path: Path) -> None:
    """Replicas on one PostgreSQL: the other keeps the device in memory until the change notice
    arrives, which drops it; its next lookup reads the revocation."""
    one, two = (Database(postgres_url, local_dir=tmp_path / name) for name in ("one", "two"))
    for db in (one, two):
        await db.open(device_migrations)
    try:
        tokens = EnrollmentTokenStore(one)
        _, secret = await tokens.create("pos", {}, 3600, "admin")
        lookup_one, lookup_two = DeviceLookup(one), DeviceLookup(two)
        device, credential = await Enroller(one, tokens, lookup_one).enroll(EnrollRequest(secret, "till-1"), 30)
        assert await lookup_two.by_credential(credential) == device  # kept in the other replica's memory
        await DeviceStore(one, lookup_one, 3).revoke("till-1")
        for _ in range(400):  # the notice travels through PostgreSQL: wait for it, up to 20 s
            found = await lookup_two.by_credential(credential)
            assert found is not None
            if found.revoked is not None:
                break
            await asyncio.sleep(0.05)
        assert found.revoked is not None
    finally:
        for db in (one, two):
            await db.close()
