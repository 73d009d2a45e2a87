"""A node's sqlite database: reads a client waits for never queue behind the writer, and the
space big deletes free goes back to the file system."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import sqlite_utils

from distribution.bundle_store import BundleStore
from distribution.schema import M007_CHUNK, distribution_migrations
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


@pytest.mark.parametrize("before", ["m006_manifest_last", "m007_manifest_chunks"])
async def test_a_manifest_signed_before_it_was_kept_in_chunks_reads_back_whole(tmp_path: Path, before: str) -> None:
    """m006 moved the manifest column last; m007 cuts each manifest into rows of chunks."""
    data = os.urandom(M007_CHUNK * 5 // 2)
    old = sqlite_utils.Database(tmp_path / "service.db")
    distribution_migrations.apply(old, stop_before=before)
    with old.atomic():
        old.execute(
            "INSERT INTO bundles (name, version, state, description, release_notes, request_sha256, created,"
            " created_by, modified, artifacts_count, artifacts_size) VALUES ('app', '1.0', 'SIGNED', '', '{}',"
            " 'r', 1, 'admin', 1, 0, 0)"
        )
        old.execute(
            "INSERT INTO bundle_manifests (name, version, manifest, signature) VALUES ('app', '1.0', ?, 'sig')",
            [data],
        )
    old.close()
    migrated = Database(tmp_path / "service.db")
    await migrated.open(catalog_migrations, distribution_migrations)
    try:
        store = BundleStore(migrated)
        signed = await store.signed_manifest("app", "1.0")
        assert signed is not None and (signed.size, signed.signature) == (len(data), "sig")
        chunks = [chunk async for chunk in store.manifest_chunks(signed)]
        assert [len(c) for c in chunks] == [M007_CHUNK, M007_CHUNK, M007_CHUNK // 2]
        assert b"".join(chunks) == data
        assert await store.delete("app", "1.0")
        left = await migrated.run(lambda: migrated.db.scalar("SELECT count(*) FROM bundle_manifest_chunks"))
        assert left == 0
    finally:
        await migrated.close()
