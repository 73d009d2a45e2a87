"""A node's sqlite database: reads a client waits for never queue behind the writer, and the
space big deletes free goes back to the file system."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from distribution.bundle_store import Bundle, BundleArtifact, BundleStore
from distribution.edges import Edge
from distribution.jobs import IN_QUEUE, JobStore
from distribution.schema import distribution_migrations
from repository.catalog import Artifact, Catalog, Repo
from repository.db import Database
from repository.schema import catalog_migrations


def artifact(path: str) -> Artifact:
    return Artifact("r", path, "a" * 64, "b" * 40, "c" * 32, 1, "application/octet-stream", 1, "u", 1, "u", "upload")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(tmp_path / "node.db")
    await db.open(catalog_migrations, distribution_migrations)
    yield db
    await db.close()


@pytest.fixture
async def catalog_database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The catalog's database, on either engine."""
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations)
    yield db
    await db.close()


@asynccontextmanager
async def writer_held(db: Database) -> AsyncIterator[asyncio.Future[Any]]:
    """The writer thread busy (a page of a bundle, a bulk load) until the block ends."""
    release = threading.Event()
    busy = asyncio.ensure_future(db.run(release.wait, 30))
    try:
        yield busy
    finally:
        release.set()
        await busy


async def answered(read: Callable[[], Awaitable[Any]]) -> Any:
    """The read's answer; a read stuck behind the writer fails the test instead of hanging it."""
    return await asyncio.wait_for(read(), 10)


async def test_catalog_reads_are_answered_while_the_writer_is_busy(catalog_database: Database) -> None:
    catalog = Catalog(catalog_database)
    await catalog.ensure_repo(Repo("r"))
    await catalog.put_artifact(artifact("a/b.bin"))
    async with writer_held(catalog_database) as busy:
        assert await answered(lambda: catalog.get_artifact("r", "a/b.bin")) == artifact("a/b.bin")
        assert [f.path for f in (await answered(lambda: catalog.children("r", "a"))).files] == ["a/b.bin"]
        assert await answered(lambda: catalog.get_folder("r", "a")) is not None
        assert [r.key for r in await answered(catalog.list_repos)] == ["r"]
        assert not busy.done()


async def test_a_distribution_status_is_answered_while_the_writer_is_busy(database: Database) -> None:
    """A status read waits for no job's bulk work (loading a bundle's rows, say)."""
    jobs, bundles = JobStore(database), BundleStore(database)
    bundle = Bundle("app", "1.0", "SIGNED", "", {}, "r", 1, "admin", 1, 1, 1)
    await bundles.stage("t", [BundleArtifact("r/a.bin", "src/a.bin", "0" * 64, "0" * 40, "0" * 32, 1)])
    await bundles.commit_staged(bundle, "t", replace=False)
    edge = Edge("edge-1", "http://127.0.0.1:9/artifactory", "", "", "", "token", "service-1", 1)
    dist_id, _ = await jobs.create("distribute", "app", "1.0", (), [edge], (0, 0))
    async with writer_held(database) as busy:
        assert await answered(lambda: bundles.get("app", "1.0")) == bundle

        async def pages() -> list[list[BundleArtifact]]:
            return [page async for page in bundles.artifact_pages("app", "1.0")]

        assert [a.target for (a,) in await answered(pages)] == ["r/a.bin"]
        found = await answered(lambda: jobs.get("app", "1.0", dist_id))
        assert found is not None and found.status == IN_QUEUE
        assert [d.id for d in await answered(lambda: jobs.history("app", "1.0"))] == [dist_id]
        assert not busy.done()


async def test_the_reader_cannot_write(database: Database) -> None:
    with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly"):
        await database.read(lambda: database.db.execute("DELETE FROM repos"))


async def test_freed_pages_and_the_wal_go_back_to_the_file_system(database: Database) -> None:
    catalog = Catalog(database)
    await catalog.ensure_repo(Repo("r"))
    await catalog.publish([artifact(f"d/{i:04d}-with-a-longer-name.bin") for i in range(2000)], [Repo("r")])
    await database.run(lambda: database.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    full = database.path.stat().st_size
    await database.run(lambda: database.db.execute("DELETE FROM artifacts"))
    free = await database.run(lambda: database.db.execute("PRAGMA freelist_count").fetchone()[0])
    assert free > 0
    assert await database.reclaim() == free
    assert await database.run(lambda: database.db.execute("PRAGMA freelist_count").fetchone()[0]) == 0
    assert database.path.stat().st_size < full
    assert database.path.with_name(database.path.name + "-wal").stat().st_size == 0


async def test_a_database_made_before_incremental_vacuum_is_converted_once_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE kept (value TEXT)")
    conn.execute("INSERT INTO kept VALUES ('still here')")
    conn.commit()
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    for _ in range(2):
        db = Database(path)
        await db.open(catalog_migrations)
        assert await db.run(lambda: db.db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2  # noqa: B023
        assert await db.read(lambda: db.db.execute("SELECT value FROM kept").fetchall()) == [("still here",)]  # noqa: B023
        await db.close()


async def test_signed_manifests_survive_their_column_moving_to_the_end_of_the_row(tmp_path: Path) -> None:
    """m006 moves the manifest after the signature, so its zeroblob is never made in memory."""
    old = Database(tmp_path / "service.db")
    await old.open(catalog_migrations, distribution_migrations)
    store = BundleStore(old)
    await store.commit_staged(Bundle("app", "1.0", "SIGNED", "", {}, "r", 1, "admin", 1, 0, 0), "t", replace=False)

    def as_before_m006() -> None:
        old.db.conn.executescript(
            """
            DROP TABLE bundle_manifests;
            CREATE TABLE bundle_manifests (
                name TEXT NOT NULL, version TEXT NOT NULL, manifest BLOB NOT NULL, signature TEXT NOT NULL,
                PRIMARY KEY (name, version),
                FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
            );
            INSERT INTO bundle_manifests VALUES ('app', '1.0', X'7b7d', '-----BEGIN PGP SIGNATURE-----');
            DELETE FROM _sqlite_migrations WHERE name = 'm006_manifest_last';
            """
        )

    await old.run(as_before_m006)
    await old.close()
    migrated = Database(tmp_path / "service.db")
    await migrated.open(catalog_migrations, distribution_migrations)
    try:
        store = BundleStore(migrated)
        signed = await store.signed_manifest("app", "1.0")
        assert signed is not None and signed.signature == "-----BEGIN PGP SIGNATURE-----"
        assert [chunk async for chunk in store.manifest_chunks(signed)] == [b"{}"]
        columns = await migrated.run(lambda: [c[1] for c in migrated.db.execute("PRAGMA table_info(bundle_manifests)")])
        assert columns == ["name", "version", "signature", "manifest"]
    finally:
        await migrated.close()
