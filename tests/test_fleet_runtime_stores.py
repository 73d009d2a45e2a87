"""The runtime inventory's stores answer the same on both engines the service may keep its state
in, sqlite and a real PostgreSQL (``db_target``): reports, provenance, the queries, events,
the bounded history and group settings."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from distribution.schema import distribution_migrations
from fleet.runtime_ingest import RuntimeIngest
from fleet.runtime_policy import RuntimePolicy
from fleet.runtime_queries import RuntimeQueries
from fleet.schema import migrations as fleet_migrations
from repository.db import Database
from wire.runtime import AppDrift, Process, RuntimeAnswer, RuntimeReport, RuntimeSettings

SHIPPED = hashlib.sha256(b"till").hexdigest()
ROGUE = hashlib.sha256(b"rogue").hexdigest()


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(distribution_migrations, *fleet_migrations)

    def seed() -> None:
        sql = db.db
        with sql.atomic():
            sql.execute(
                "INSERT INTO bundles (name, version, state, description, release_notes, request_sha256, created,"
                " created_by, modified, artifacts_count, artifacts_size) VALUES ('app', '1.0', 'SIGNED', '', '{}',"
                " '', 0, 'test', 0, 1, 4)"
            )
            sql.execute(
                "INSERT INTO bundle_artifacts (name, version, target, source, sha256, sha1, md5, size, properties)"
                " VALUES ('app', '1.0', 'r/app/1.0/till', 'r/app/1.0/till', :sha, '', '', 4, '{}')",
                {"sha": SHIPPED},
            )
            sql.executemany(
                "INSERT INTO fleet_devices (id, name, grp, credential_sha256, token_id, enrolled, poll_interval)"
                " VALUES (:id, :id, :grp, :id, 't', 0, 30)",
                [{"id": "till-1", "grp": "pos"}, {"id": "till-2", "grp": "lab"}],
            )

    await db.run(seed)
    yield db
    await db.close()


async def test_reports_provenance_and_queries_agree_on_both_engines(database: Database) -> None:
    ingest, queries = RuntimeIngest(database, 2, 10), RuntimeQueries(database)
    shipped, rogue = Process(1, 5, "/opt/till", SHIPPED, "u"), Process(2, 6, "/tmp/x", ROGUE, "u")
    drift = (AppDrift("till", "1.0", modified=("till",)),)
    assert await ingest.ingest("till-1", RuntimeReport("till-1", 1, 0, 1, (shipped, rogue)), 10) == RuntimeAnswer(1)
    assert await ingest.ingest("till-2", RuntimeReport("till-2", 1, 0, 1, (rogue,), drift=drift), 11) == RuntimeAnswer(
        1
    )
    assert [(w["device"], w["path"]) for w in await queries.where("app", "1.0", "", 10)] == [
        ("till-1", "r/app/1.0/till")
    ]
    device = await queries.device("till-1")
    assert [p["unknown"] for p in device["processes"]] == [False, True]
    assert [(u["sha256"], u["devices"]) for u in await queries.unknown(None, "", 10)] == [(ROGUE, ["till-1", "till-2"])]
    assert [u["devices"] for u in await queries.unknown("lab", "", 10)] == [["till-2"]]
    assert [(d["device"], d["path"]) for d in await queries.drift(None)] == [("till-2", "till")]
    events = await queries.events(kind=None, device=None, after=0, limit=10)
    assert sorted((e["device"], e["kind"]) for e in events) == [
        ("till-1", "unknown_executable"),
        ("till-2", "drift"),
        ("till-2", "unknown_executable"),
    ]
    assert await ingest.ingest("till-1", RuntimeReport("till-1", 5, 4, 1, ()), 12) == RuntimeAnswer(1, full=True)
    for seq in (2, 3):
        await ingest.ingest("till-1", RuntimeReport("till-1", seq, seq - 1, 1, (), ((1, 5),)), 12 + seq)
    assert await queries.where("app", "1.0", "", 10) == []
    assert [c["seq"] for c in await queries.changes("till-1")] == [3, 2]


async def test_group_settings_are_kept_on_both_engines(database: Database) -> None:
    policy = RuntimePolicy(database, RuntimeSettings())
    assert await policy.get("pos") == RuntimeSettings()
    wanted = RuntimeSettings(False, 30, ("/usr/sbin/*",), True)
    await policy.set("pos", wanted)
    assert await policy.get("pos") == wanted
    assert await RuntimePolicy(database, RuntimeSettings()).get("pos") == wanted
