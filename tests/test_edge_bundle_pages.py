"""A bundle is committed to an edge, and removed from it, a page at a time (edge/bundle_index.py):
clients see all of it or none of it at every page, nothing else waits, a crash between pages
leaves nothing half-visible, and the space the removal freed comes back."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlite_utils

from edge.app import create_app
from edge.keys import transactions_key
from edge.schema import edge_migrations
from edge.store import EdgeStore
from repository import artifacts as artifact_service
from repository import bulk
from repository.catalog import Artifact, Catalog
from repository.db import Database
from repository.http import keys as core
from repository.schema import catalog_migrations
from tests.conftest import UPLOADS, make_settings, upload
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import (
    BUNDLES,
    REPO,
    commit,
    download,
    manifest_of,
    push,
    sha256,
    signed,
    status_of,
    tx_id,
)
from tests.test_edge_transactions import dist as dist  # noqa: F401  (the fixture)
from tests.test_edge_transactions import edge_settings as edge_settings  # noqa: F401  (on both engines)
from wire.manifest import Manifest

PAGE = 3


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PAGE", PAGE)
    monkeypatch.setattr(artifact_service, "COLLECT_PAGE", 2)


def files_of(count: int, tag: str = "") -> dict[str, bytes]:
    return {f"d{i // 2}/f{i:02d}{tag}.bin": os.urandom(200 + i) for i in range(count)}


def targets(files: dict[str, bytes], name: str = "app", version: str = "1.0.0") -> list[str]:
    return [f"{REPO}/{name}/{version}/{path}" for path in files]


class PauseBefore:
    """Holds a step of the edge's bulk work before its ``call``-th call (0-based) until released."""

    def __init__(self, edge: Any, step: str, call: int) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        index = edge.server.app[core.catalog].bulk
        inner: Callable[..., Awaitable[Any]] = getattr(index, step)
        calls = 0

        async def paused(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            if calls == call:
                self.reached.set()
                await self.release.wait()
            calls += 1
            return await inner(*args, **kwargs)

        setattr(index, step, paused)


def crash_copy(src: Path, dst: Path) -> None:
    """What a crash at this instant leaves on disk (no write is in progress): the data dir as it
    is, without gpg-agent's sockets and sqlite's shared-memory index, which a restart rebuilds."""

    def skipped(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.endswith("-shm") or stat.S_ISSOCK(os.lstat(os.path.join(folder, n)).st_mode)]

    shutil.copytree(src, dst, ignore=skipped)


async def restarted(aiohttp_client: Any, tmp_path: Path, edge: Any) -> Any:
    """A second edge on a copy of this edge's data dir, as after a crash and a restart."""
    after = tmp_path / "after"
    crash_copy(edge.server.app[core.artifacts].catalog._database.path.parent, after / "edge")
    return await aiohttp_client(create_app(make_settings(after)))


async def rows(client: Any, sql: str) -> list[tuple[Any, ...]]:
    database = client.server.app[core.catalog]._database
    return await database.run(lambda: database.db.execute(sql).fetchall())


async def listed(client: Any, headers: dict[str, str]) -> list[str]:
    resp = await client.get(BUNDLES, headers=headers)
    assert resp.status == 200
    return [f"{b['name']}/{b['version']}" for b in await resp.json()]


async def stored(client: Any, data: bytes) -> bool:
    return await client.server.app[core.storage].exists(sha256(data))


async def served(client: Any, files: dict[str, bytes], name: str = "app", version: str = "1.0.0") -> list[int]:
    return [(await download(client, target))[0] for target in targets(files, name, version)]


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 1])
async def test_a_bundle_of_any_number_of_pages_commits_whole_and_is_removed_whole(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, count: int
) -> None:
    files = files_of(count)
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    assert [await download(edge, t) for t in targets(files)] == [(200, data) for data in files.values()]
    assert await listed(edge, dist) == ["app/1.0.0"]
    assert (await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 204
    assert await served(edge, files) == [404] * count
    assert await listed(edge, dist) == []
    assert [await stored(edge, data) for data in files.values()] == [False] * count
    assert await rows(edge, "SELECT * FROM bundle_files") == []
    assert await rows(edge, "SELECT * FROM bulk_changes") + await rows(edge, "SELECT * FROM bundle_changes") == []


async def test_nothing_of_a_bundle_shows_before_its_commit_ends_and_other_work_goes_on(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = files_of(3 * PAGE + 1)
    body = signed(key_factory, keys.alice, manifest_of(files))
    pause = PauseBefore(edge, "publish_page", 2)
    committing = asyncio.ensure_future(push(edge, body, dist, files))
    await pause.reached.wait()  # two pages indexed, two to go
    assert await served(edge, files) == [404] * len(files)
    assert (await edge.get(f"/artifactory/api/storage/{REPO}/app")).status == 404
    assert REPO not in [r["key"] for r in await (await edge.get("/artifactory/api/repositories")).json()]
    assert await listed(edge, dist) == []
    assert (await status_of(edge, tx_id(body), dist))["state"] == "OPEN"
    await upload(edge, "meanwhile.bin", b"an upload during a commit")
    assert await download(edge, f"{UPLOADS}/meanwhile.bin") == (200, b"an upload during a commit")
    pause.release.set()
    assert (await committing)["state"] == "COMMITTED"
    assert [await download(edge, t) for t in targets(files)] == [(200, data) for data in files.values()]
    assert (await edge.get(f"/artifactory/api/storage/{REPO}/app")).status == 200


@pytest.mark.parametrize("edge_settings", ["sqlite"], indirect=True)  # a copy of the data dir is a crash
async def test_a_commit_cut_short_by_a_crash_leaves_nothing_and_the_retry_commits(
    aiohttp_client: Any, tmp_path: Path, edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = files_of(3 * PAGE + 1)
    body = signed(key_factory, keys.alice, manifest_of(files))
    pause = PauseBefore(edge, "publish_page", 2)
    committing = asyncio.ensure_future(push(edge, body, dist, files))
    await pause.reached.wait()
    after = await restarted(aiohttp_client, tmp_path, edge)
    pause.release.set()
    await committing

    assert await served(after, files) == [404] * len(files)
    assert await rows(after, "SELECT * FROM bulk_changes") + await rows(after, "SELECT * FROM bundle_changes") == []
    assert await rows(after, "SELECT * FROM bundle_files") == []
    assert await rows(after, f"SELECT path FROM folders WHERE repo = '{REPO}'") == []
    assert await rows(after, "SELECT * FROM artifacts WHERE owner LIKE 'bundle:%'") == []
    assert (await status_of(after, tx_id(body), dist))["state"] == "OPEN"
    assert (await commit(after, tx_id(body), dist))["state"] == "COMMITTED"  # the service's retry
    assert [await download(after, t) for t in targets(files)] == [(200, data) for data in files.values()]


def sharing(files: dict[str, bytes], shared_path: str, own: dict[str, bytes]) -> Manifest:
    """Bundle other/1.0: one file at the very path (and with the bytes) app/1.0.0 has, and its own."""
    theirs = manifest_of(own, name="other", version="1.0")
    mine = manifest_of(files)
    shared = next(a for a in mine.artifacts if a.target.endswith(shared_path))
    return Manifest.create("other", "1.0", [shared, *theirs.artifacts], created_by="release-manager")


@pytest.mark.parametrize("edge_settings", ["sqlite"], indirect=True)  # a copy of the data dir is a crash
async def test_a_removal_hides_the_whole_bundle_at_once_and_a_restart_finishes_it(
    aiohttp_client: Any, tmp_path: Path, edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = files_of(3 * PAGE + 1)
    shared_path = next(iter(files))
    own = files_of(2, tag="-other")
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    await push(edge, signed(key_factory, keys.alice, sharing(files, shared_path, own)), dist, own)
    mine = {p: d for p, d in files.items() if p != shared_path}
    pause = PauseBefore(edge, "remove_page", 2)
    removing = asyncio.ensure_future(edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist))
    await pause.reached.wait()  # two pages removed, two to go
    assert await served(edge, mine) == [404] * len(mine)
    assert await download(edge, targets(files)[0]) == (200, files[shared_path]), "other/1.0 still has it"
    assert await served(edge, own, "other", "1.0") == [200] * len(own)
    assert await listed(edge, dist) == ["other/1.0"]
    await upload(edge, "meanwhile.bin", b"an upload during a removal")
    after = await restarted(aiohttp_client, tmp_path, edge)
    pause.release.set()
    assert (await removing).status == 204

    for client in (edge, after):  # the removal done in full, and finished after the crash
        assert await served(client, mine) == [404] * len(mine)
        assert [await stored(client, data) for data in mine.values()] == [False] * len(mine)
        assert await download(client, targets(files)[0]) == (200, files[shared_path])
        assert await listed(client, dist) == ["other/1.0"]
        assert await rows(client, "SELECT name FROM bundle_files WHERE name = 'app'") == []
        assert (
            await rows(client, "SELECT * FROM bulk_changes") + await rows(client, "SELECT * FROM bundle_changes") == []
        )
        assert (await client.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 404
    # The same bundle can come back afterwards, from a fresh transaction.
    await push(after, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    assert [await download(after, t) for t in targets(files)] == [(200, data) for data in files.values()]


async def test_a_removal_asked_again_while_it_runs_finishes_it_once(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = files_of(2 * PAGE)
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    pause = PauseBefore(edge, "remove_page", 1)
    first = asyncio.ensure_future(edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist))
    await pause.reached.wait()
    second = asyncio.ensure_future(edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist))  # the service's retry
    pause.release.set()
    assert sorted([(await first).status, (await second).status]) == [204, 204]
    assert await served(edge, files) == [404] * len(files)


@pytest.mark.parametrize("edge_settings", ["sqlite"], indirect=True)  # a file's pages
async def test_the_space_a_removal_frees_goes_back_to_the_file_system(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = {f"d{i // 40}/file-with-a-longer-name-{i:04d}.bin": os.urandom(64) for i in range(400)}
    database = edge.server.app[core.catalog]._database
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    await database.run(lambda: database.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    full = database.path.stat().st_size
    assert (await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 204
    assert await rows(edge, "PRAGMA freelist_count") == [(0,)]
    assert database.path.stat().st_size < full
    assert database.path.with_name(database.path.name + "-wal").stat().st_size == 0


async def test_downloads_listings_and_the_bundle_list_do_not_wait_for_the_database_writer(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """While the writer is held (a page of a commit, say), a download, a folder listing and the
    list of bundles are still answered, and so is a transaction's state, which every upload reads.
    (A transaction's status call also works out what is missing or published: bulk work, on the
    writer.)"""
    files = files_of(2)
    body = signed(key_factory, keys.alice, manifest_of(files))
    await push(edge, body, dist, files)
    await upload(edge, "a.bin", b"uploaded")
    database = edge.server.app[core.catalog]._database
    release = threading.Event()
    busy = asyncio.ensure_future(database.run(release.wait, 30))
    try:
        got = await asyncio.wait_for(download(edge, f"{UPLOADS}/a.bin"), 10)
        assert got == (200, b"uploaded")
        assert (await asyncio.wait_for(edge.get(f"/artifactory/api/storage/{REPO}/app/1.0.0"), 10)).status == 200
        assert await asyncio.wait_for(listed(edge, dist), 10) == ["app/1.0.0"]
        transactions = edge.server.app[transactions_key]
        assert (await asyncio.wait_for(transactions.get(tx_id(body)), 10)).state.value == "COMMITTED"
        assert not busy.done()
    finally:
        release.set()
        await busy


async def test_garbage_collection_lets_an_upload_in_between_its_pages(edge: Any) -> None:
    """A collect of many blobs holds the index lock a page at a time: an upload waiting for the
    lock gets it between two pages, not after the last."""
    artifacts = edge.server.app[core.artifacts]
    blobs = [os.urandom(100 + i) for i in range(10)]
    await artifacts.storage.write_many([(sha256(b), [b]) for b in blobs])
    waiting = asyncio.Event()

    class ObservedLock(asyncio.Lock):
        async def acquire(self) -> bool:
            if self.locked():
                waiting.set()
            return await super().acquire()

    observed = ObservedLock()
    artifacts._index_lock.local = lambda key: observed  # this process's part of the index lock
    held = artifacts._held
    finished: list[str] = []

    async def first_page_waits_for_the_upload(sha256s: list[str]) -> set[str]:
        if not finished and not waiting.is_set():
            uploading.add(asyncio.ensure_future(uploaded()))
            await waiting.wait()  # the upload is waiting for the lock this page holds
        return await held(sha256s)

    async def uploaded() -> None:
        await upload(edge, "during-gc.bin", b"uploaded during a collect")
        finished.append("upload")

    uploading: set[asyncio.Future[None]] = set()
    artifacts._held = first_page_waits_for_the_upload
    await artifacts.collect([sha256(b) for b in blobs])
    finished.append("collect")
    await asyncio.gather(*uploading)
    assert finished == ["upload", "collect"]
    assert [await stored(edge, b) for b in blobs] == [False] * len(blobs)


async def test_reading_a_transaction_does_not_read_its_manifest(db_target: str, tmp_path: Path) -> None:
    """The manifest lives apart from the transaction's row, so a read of the row (each upload
    makes some) costs the same for a manifest of any size."""
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, edge_migrations)
    columns = [c["name"] for c in sa.inspect(db.engine).get_columns("transactions")]
    await db.close()
    assert "manifest" not in columns and "signature" in columns


async def test_an_edge_database_from_before_keeps_its_transactions_and_bundles(tmp_path: Path) -> None:
    """The migration moves manifests out of the transactions' rows and keeps every claim."""
    path = tmp_path / "edge.db"
    old = sqlite_utils.Database(sqlite3.connect(path))
    catalog_migrations.apply(old, stop_before="m004_bulk_changes")
    edge_migrations.apply(old, stop_before="m005_manifests_apart_bundle_changes")
    old.execute(
        "INSERT INTO transactions (id, name, version, state, manifest, signature, signer, created, expires,"
        " committed, files, bytes) VALUES ('t1', 'app', '1.0', 'COMMITTED', ?, 'sig', 'fpr', 1, 2, 3, 1, 5)",
        [b"the manifest bytes"],
    )
    old.execute("INSERT INTO received_bundles VALUES ('app', '1.0', 't1', 3, 1, 5)")
    old.execute("INSERT INTO bundle_files VALUES ('app', '1.0', 'releases-local', 'a.bin')")
    old.execute("INSERT INTO repos (key, created) VALUES ('releases-local', 1)")
    entry = Artifact("releases-local", "a.bin", "a" * 64, "b" * 40, "c" * 32, 5, "x", 1, "u", 1, "u", "bundle:app/1.0")
    row = entry.row()
    old.execute(f"INSERT INTO artifacts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    old.conn.commit()
    old.close()

    db = Database(path)
    await db.open(catalog_migrations, edge_migrations)
    store = EdgeStore(db)
    tx = await store.get("t1")
    assert tx is not None and (tx.name, tx.state.value, tx.committed) == ("app", "COMMITTED", 3)
    await store.manifest_to("t1", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"the manifest bytes" and await store.signature("t1") == "sig"
    assert await db.run(lambda: db.db.execute("SELECT * FROM bundle_files").fetchall()) == [
        ("app", "1.0", "releases-local", "a.bin")
    ]
    assert await Catalog(db).get_artifact("releases-local", "a.bin") == entry
    await db.close()
