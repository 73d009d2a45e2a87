"""The node's small stores, on both engines: API tokens, the quarantine, leases (work done once
per node, or once across replicas sharing a PostgreSQL) and the scrub's progress.

A replica here is a second ``Database`` on the same target, with connections of its own and
a local directory of its own, as another process (or, on PostgreSQL, another machine) has.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from repository import leases as leases_module
from repository import tokens as tokens_module
from repository.catalog import Artifact, Catalog, Repo
from repository.db import Database
from repository.leases import Leases
from repository.quarantine import Quarantine, QuarantinedBlob
from repository.schema import catalog_migrations
from repository.scrub_store import CatalogBlobs, ScrubStore
from repository.tokens import Role, TokenStore


async def open_database(target: str, local_dir: Path) -> Database:
    db = Database(target, local_dir=local_dir)
    await db.open(catalog_migrations)
    return db


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_database(db_target, tmp_path / "local")
    yield db
    await db.close()


@pytest.fixture
async def replica(db_target: str, tmp_path: Path, database: Database) -> AsyncIterator[Database]:
    """Another process on the same database (opened after the first, which made the schema)."""
    db = await open_database(db_target, tmp_path / "replica")
    yield db
    await db.close()


def artifact(path: str, sha: str, repo: str = "r") -> Artifact:
    return Artifact(repo, path, sha, "b" * 40, "c" * 32, 7, "application/octet-stream", 1, "u", 1, "u", "upload")


async def rows(db: Database, sql: str) -> list[tuple[object, ...]]:
    return await db.run(lambda: [tuple(r) for r in db.db.execute(sql).fetchall()])


class Clock:
    """``now_ms`` of a module, moved by hand: expiry without waiting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *modules: object) -> None:
        self.now = 1_000_000
        for module in modules:
            monkeypatch.setattr(module, "now_ms", lambda: self.now)


# -- tokens ---------------------------------------------------------------------------------


async def test_a_token_resolves_to_its_subject_and_role_and_only_its_hash_is_stored(database: Database) -> None:
    tokens = TokenStore(database)
    info, secret = await tokens.create(Role.deployer, "ci", "for the pipeline")
    principal = await tokens.resolve(secret)
    assert principal is not None
    assert (principal.subject, principal.role, principal.token_id) == ("ci", Role.deployer, info.id)
    assert await rows(database, "SELECT id, token_hash, role, subject, description, revoked FROM tokens") == [
        (info.id, hashlib.sha256(secret.encode()).hexdigest(), "deployer", "ci", "for the pipeline", None)
    ]
    assert await tokens.resolve(secret + "x") is None
    assert await tokens.resolve("not-a-token") is None


async def test_an_expired_token_resolves_to_no_one(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch, tokens_module)
    tokens = TokenStore(database)
    info, secret = await tokens.create(Role.reader, "partner", expires_in=60)
    assert info.expires == clock.now + 60_000
    clock.now += 59_999
    assert await tokens.resolve(secret) is not None
    clock.now += 1
    assert await tokens.resolve(secret) is None


async def test_a_revoked_token_resolves_to_no_one_and_is_revoked_once(database: Database) -> None:
    tokens = TokenStore(database)
    info, secret = await tokens.create(Role.admin, "ops")
    kept, kept_secret = await tokens.create(Role.admin, "ops")
    assert await tokens.resolve(secret) is not None  # now held in memory
    assert await tokens.revoke(info.id) is True
    assert await tokens.resolve(secret) is None
    assert await tokens.revoke(info.id) is False, "already revoked"
    assert await tokens.revoke("no-such-id") is False
    assert await tokens.resolve(kept_secret) is not None
    listed = {t.id: t.revoked is not None for t in await tokens.list()}
    assert listed == {info.id: True, kept.id: False}


@pytest.mark.parametrize("live", [0, 1, 2])
async def test_revoking_a_subject_revokes_each_of_its_live_tokens_and_no_one_else(
    database: Database, live: int
) -> None:
    tokens = TokenStore(database)
    made = [await tokens.create(Role.reader, "leaver") for _ in range(live + 1)]
    await tokens.revoke(made[0][0].id)  # revoked before: not counted again
    other_info, other_secret = await tokens.create(Role.reader, "stayer")
    assert await tokens.revoke_subject("leaver") == live
    assert [await tokens.resolve(secret) for _, secret in made] == [None] * (live + 1)
    assert await tokens.resolve(other_secret) is not None
    listed = await tokens.list()
    assert [t.id for t in listed] == [t.id for t in sorted(listed, key=lambda t: (t.created, t.id))]
    assert {t.id: t.revoked is not None for t in listed} == {info.id: True for info, _ in made} | {other_info.id: False}


# -- the quarantine ---------------------------------------------------------------------------


def blob(sha: str, reason: str = "sha256 mismatch", found: int = 1, location: str | None = "/q/x") -> QuarantinedBlob:
    return QuarantinedBlob(sha, 7, found, reason, location)


async def test_a_blob_quarantined_again_keeps_one_record_with_the_latest_finding(database: Database) -> None:
    quarantine = Quarantine(database)
    await quarantine.add(blob("1" * 64, "sha256 mismatch", found=5))
    await quarantine.add(blob("1" * 64, "missing from the store", found=9, location=None))
    assert await quarantine.count() == 1
    assert await quarantine.get("1" * 64) == blob("1" * 64, "missing from the store", found=9, location=None)
    assert await quarantine.get("2" * 64) is None


async def test_only_the_quarantined_blobs_are_released_and_listed_until_then(database: Database) -> None:
    quarantine = Quarantine(database)
    held = [blob(c * 64, found=f) for c, f in (("3", 2), ("1", 1), ("2", 2))]
    for b in held:
        await quarantine.add(b)
    assert [b.sha256 for b in await quarantine.blobs()] == ["1" * 64, "2" * 64, "3" * 64]  # by found, then sha256
    assert await quarantine.among(["1" * 64, "9" * 64]) == {"1" * 64}
    assert await quarantine.release(["9" * 64]) == []
    assert await quarantine.release(["3" * 64, "1" * 64, "9" * 64]) == ["1" * 64, "3" * 64]
    assert [b.sha256 for b in await quarantine.blobs()] == ["2" * 64]
    assert await quarantine.among(["1" * 64, "2" * 64, "3" * 64]) == {"2" * 64}


async def test_a_quarantined_blob_names_every_path_that_holds_it(database: Database) -> None:
    catalog = Catalog(database)
    for repo in ("r", "s"):
        await catalog.ensure_repo(Repo(repo))
    for repo, path in (("s", "a.bin"), ("r", "z/b.bin"), ("r", "a.bin")):
        await catalog.put_artifact(artifact(path, "1" * 64, repo))
    await catalog.put_artifact(artifact("other.bin", "2" * 64))
    assert await Quarantine(database).paths("1" * 64) == [("r", "a.bin"), ("r", "z/b.bin"), ("s", "a.bin")]


# -- leases ---------------------------------------------------------------------------------------


async def test_a_lease_is_held_renewed_given_back_and_taken_over_once_expired(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, leases_module)
    first, second = Leases(database, holder="first"), Leases(database, holder="second")
    assert await first.take("scrub", 10)
    assert not await second.take("scrub", 10)
    clock.now += 9_999
    assert await first.take("scrub", 10), "the holder renews"
    clock.now += 9_999
    assert not await second.take("scrub", 10), "renewed: not expired yet"
    assert await second.holder_of("scrub") == "first"
    clock.now += 1
    assert await first.holder_of("scrub") is None, "expired"
    assert await second.take("scrub", 10)
    assert not await first.take("scrub", 10)
    await first.give_back("scrub")  # not its own any more: nothing happens
    assert await first.holder_of("scrub") == "second"
    await second.give_back("scrub")
    assert await first.holder_of("scrub") is None
    assert await first.take("scrub", 10)


async def test_replicas_taking_the_same_lease_at_once_give_it_to_exactly_one(
    database: Database, replica: Database
) -> None:
    holders = [Leases(db, holder=f"{i}") for i, db in enumerate([database, replica] * 3)]
    for round_ in range(20):
        name = f"work-{round_}"
        taken = await asyncio.gather(*(leases.take(name, 60) for leases in holders))
        assert sum(taken) == 1, taken
        winner = holders[taken.index(True)].holder
        assert await holders[0].holder_of(name) == winner
        assert await Leases(replica).holder_of(name) == winner


# -- the scrub's progress and the blobs it checks ---------------------------------------------------


async def test_a_scrub_pass_records_its_pages_resumes_where_it_was_and_ends_as_the_last_pass(
    database: Database,
) -> None:
    store = ScrubStore(database)
    fresh = await store.progress()
    assert (fresh.started, fresh.cursor, fresh.last_finished, fresh.last_blobs) == (None, "", None, 0)
    assert (await store.begin(100)).started == 100
    await store.advance("2" * 64, 2, 14, 0)
    await store.advance("5" * 64, 3, 21, 1)
    resumed = await store.begin(200)  # after a restart: the same pass, at its cursor
    assert (resumed.started, resumed.cursor, resumed.blobs, resumed.bytes, resumed.quarantined) == (
        100, "5" * 64, 5, 35, 1,
    )  # fmt: skip
    done = await store.finish(300)
    assert (done.started, done.cursor, done.blobs) == (None, "", 0)
    assert (done.last_started, done.last_finished, done.last_blobs, done.last_bytes, done.last_quarantined) == (
        100, 300, 5, 35, 1,
    )  # fmt: skip
    assert (await store.begin(400)).blobs == 0, "a new pass starts from nothing"


@pytest.mark.parametrize("limit", [1, 2, 4, 5, 6])
async def test_the_scrub_reads_each_referenced_blob_once_in_sha256_order_across_pages(
    database: Database, limit: int
) -> None:
    """Five blobs, one named by two paths, read ``limit`` at a time (limits around the count)."""
    catalog = Catalog(database)
    await catalog.ensure_repo(Repo("r"))
    shas = [f"{i:x}" * 64 for i in (9, 3, 7, 1, 5)]
    for i, sha in enumerate(shas):
        await catalog.put_artifact(artifact(f"f{i}.bin", sha))
    await catalog.put_artifact(artifact("again.bin", shas[0]))
    source, read, after = CatalogBlobs(database), [], ""
    while page := await source.blobs_after(after, limit):
        assert len(page) <= limit
        read += page
        after = page[-1][0]
    assert read == [(sha, 7) for sha in sorted(shas)]
    assert await source.references(shas[0]) and not await source.references("0" * 64)
