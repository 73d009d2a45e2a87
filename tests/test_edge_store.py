"""The edge's own records (edge/store.py, edge/claims.py, edge/transaction_files.py) on both
engines a node can keep them in, sqlite and PostgreSQL: the same calls give the same answers,
and replicas sharing one database that make the same change at once end with one right result."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from edge import store as store_module
from edge.claims import COMMIT, REMOVE, BundleChange, BundleClaims
from edge.schema import edge_migrations
from edge.store import EdgeStore, KeyAlias, ReceivedBundle, Transaction, bundle_owner
from edge.transaction_files import TransactionFile, TransactionFiles
from repository import bulk
from repository.db import Database
from repository.entries import Artifact
from repository.errors import Conflict
from repository.schema import catalog_migrations
from wire.manifest import ManifestError
from wire.protocol import TransactionState as State

REPO = "releases-local"
PAGE = 3
MIB = 1024 * 1024
# What storing and reading back a 30 MiB manifest may allocate at once: a few chunks of 1 MiB in
# flight; held whole it would take 30 MiB and more.
FLAT_LIMIT = 8 * MIB


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PAGE", PAGE)


async def opened(target: str, local_dir: Path) -> Database:
    db = Database(target, local_dir=local_dir)
    await db.open(catalog_migrations, edge_migrations)
    return db


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = await opened(db_target, tmp_path / "local")
    yield db
    await db.close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def file(path: str, content: str, size: int = 10) -> TransactionFile:
    return TransactionFile(REPO, path, sha(content), size, "1" * 40, "5" * 32, {"k": ["v"]})


def transaction(tx_id: str, files: list[TransactionFile], name: str = "app", version: str = "1.0") -> Transaction:
    return Transaction(tx_id, name, version, State.OPEN, "F" * 40, 1000, 2000, None, len(files), 10 * len(files))


async def started(db: Database, tmp_path: Path, tx: Transaction, files: list[TransactionFile]) -> bool:
    """What a start does: record the files, then open the transaction with its manifest."""
    await TransactionFiles(db).add(tx.id, files)
    manifest = tmp_path / f"manifest-{tx.id}"
    manifest.write_bytes(f"manifest of {tx.id}".encode())
    _, created = await EdgeStore(db).open(tx, manifest, "signature")
    return created


async def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return await db.run(lambda: [tuple(r) for r in db.db.execute(sql, params)])


FILES = [file("a.bin", "one"), file("b.bin", "two"), file("c.bin", "one"), file("d.bin", "three")]


async def test_a_transaction_opens_once_lists_its_distinct_blobs_and_opens_again_after_it_ended(
    database: Database, tmp_path: Path
) -> None:
    store = EdgeStore(database)
    tx = transaction("t1", FILES)
    assert await started(database, tmp_path, tx, FILES)
    assert await store.get("t1") == tx and await store.signature("t1") == "signature"
    assert not await started(database, tmp_path, tx, [])  # open already: answered as it is
    blobs = {sha("one"): 10, sha("two"): 10, sha("three"): 10}
    assert await store.blob_page("t1", "") == dict(sorted(blobs.items()))
    assert [s async for page in store.blob_pages("t1") for s in page] == sorted(blobs)
    assert await store.blob_sizes("t1", [sha("two"), sha("none")]) == {sha("two"): 10}
    assert await store.blob_sizes("t1", []) == {}
    assert (await store.blob_size("t1", sha("one")), await store.blob_size("t1", sha("none"))) == (10, None)
    assert await store.open_ids() == {"t1"} and await store.expired(1999) == [] and await store.expired(2000) == ["t1"]

    assert await store.end("t1", State.ABORTED) and not await store.end("t1", State.EXPIRED)
    assert (await store.count_by_state())[State.ABORTED] == 1 and await store.open_ids() == set()
    await TransactionFiles(database).drop("t1")  # as the abort does
    assert await started(database, tmp_path, tx, [])  # ended: opened afresh, its old blob list gone
    assert await store.get("t1") == tx and await store.blob_page("t1", "") == {}
    assert await store.count_by_state() == {State.OPEN: 1, State.COMMITTED: 0, State.ABORTED: 0, State.EXPIRED: 0}


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 25])
async def test_a_manifest_comes_back_byte_for_byte_in_chunks_of_any_count(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(store_module, "MANIFEST_CHUNK", 8)
    manifest, copy = tmp_path / "manifest", tmp_path / "copy"
    manifest.write_bytes(data := os.urandom(size))
    store = EdgeStore(database)
    await store.open(transaction("t1", []), manifest, "sig")
    await store.manifest_to("t1", copy)
    assert copy.read_bytes() == data
    assert await rows(database, "SELECT seq FROM transaction_manifest_chunks ORDER BY seq") == [
        (seq,) for seq in range(-(-size // 8))
    ]
    await database.run(lambda: database.db.execute("DELETE FROM transactions WHERE id = 't1'"))
    assert await rows(database, "SELECT seq FROM transaction_manifest_chunks") == []  # they go with it


async def test_a_manifest_is_read_back_while_the_writer_is_busy(database: Database, tmp_path: Path) -> None:
    """A commit checks the stored manifest's signature again: that copy, a long read, does not
    wait for the database's writer (a page of another bundle's commit, say)."""
    manifest = tmp_path / "manifest"
    manifest.write_bytes(b"the manifest")
    store = EdgeStore(database)
    await store.open(transaction("t1", []), manifest, "sig")
    release = threading.Event()
    busy = asyncio.ensure_future(database.run(release.wait, 30))
    try:
        await asyncio.wait_for(store.manifest_to("t1", tmp_path / "copy"), 10)
        assert (tmp_path / "copy").read_bytes() == b"the manifest" and not busy.done()
    finally:
        release.set()
        await busy


async def test_a_large_manifest_is_stored_and_read_back_a_chunk_at_a_time(database: Database, tmp_path: Path) -> None:
    """Neither the store nor its driver holds a 30 MiB manifest (100,000 files) whole: what Python
    allocates at once stays a few chunks, whatever the manifest's size."""
    manifest, copy = tmp_path / "manifest", tmp_path / "copy"
    with open(manifest, "wb") as out:
        for _ in range(30):
            out.write(os.urandom(MIB))
    store = EdgeStore(database)
    tracemalloc.start()
    try:
        await store.open(transaction("t1", []), manifest, "sig")
        await store.manifest_to("t1", copy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert copy.read_bytes() == manifest.read_bytes()
    assert peak < FLAT_LIMIT


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7])
async def test_blobs_of_live_transactions_are_pinned_and_stored_ones_known_across_pages(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(store_module, "IN_PAGE", 3)
    store = EdgeStore(database)
    live = [file(f"f{i}", f"live {i}") for i in range(count)]
    ended = [file("gone", "ended only")]
    await started(database, tmp_path, transaction("live", live), live)
    await started(database, tmp_path, transaction("ended", ended, version="2"), ended)
    await store.end("ended", State.ABORTED)
    asked = [f.sha256 for f in live + ended] + [sha("unknown")]
    assert await store.pinned(asked) == {f.sha256 for f in live}
    assert await store.stored(asked) == {}
    await store.mark_stored("live", [f.sha256 for f in live[1:]] + [sha("unknown")])
    assert await store.stored(asked) == {f.sha256: 10 for f in live[1:]}
    await database.run(  # a bundle being removed pins nothing
        lambda: database.db.execute("INSERT INTO bundle_changes VALUES ('app', '1.0', 'live', 'remove', 'k')")
    )
    assert await store.pinned(asked) == set() and await store.stored(asked) == {}


async def committed(db: Database, tx: Transaction, now: int = 5000) -> None:
    await db.run(lambda: in_one_transaction(db, lambda: EdgeStore(db).commit_rows(tx, now)))


def in_one_transaction(db: Database, fn: Callable[[], None]) -> None:
    with db.db.atomic():
        fn()


async def index(db: Database, name: str, version: str, paths: list[str]) -> None:
    """Index entries owned by a bundle (what the catalog's bulk publish writes)."""

    def insert() -> None:
        db.db.execute("INSERT INTO repos (key, created) VALUES (:key, 1) ON CONFLICT (key) DO NOTHING", {"key": REPO})
        entries = [
            Artifact(REPO, p, sha(p), "1" * 40, "5" * 32, len(p), "x", 1, "u", 1, "u", bundle_owner(name, version))
            for p in paths
        ]
        db.db.executemany(
            "INSERT INTO artifacts (repo, path, folder, name, sha256, sha1, md5, size, mime_type, created,"
            " created_by, modified, modified_by, owner, properties) VALUES (:repo, :path, :folder, :name, :sha256,"
            " :sha1, :md5, :size, :mime_type, :created, :created_by, :modified, :modified_by, :owner, :properties)",
            [e.row() for e in entries],
        )

    await db.run(insert)


async def test_a_committed_bundle_is_listed_and_its_served_paths_read_a_page_at_a_time(
    database: Database, tmp_path: Path
) -> None:
    store, claims = EdgeStore(database), BundleClaims(database)
    paths = ["a/1", "a/2", "b", "c", "d"]
    files = [file(p, p) for p in paths]
    tx = transaction("t1", files)
    await started(database, tmp_path, tx, files)
    await database.run(claims.claim_rows, tx, [(REPO, p) for p in paths])
    await database.run(claims.claim_rows, tx, [(REPO, p) for p in paths[:2]])  # a page done again
    await database.run(claims.claim_rows, tx, [("other-local", "z")])
    await index(database, "app", "1.0", paths[:-1])  # "d" claimed, but its entry gone
    await committed(database, tx)
    assert (await store.get("t1")).state is State.COMMITTED  # type: ignore[union-attr]
    bundle = ReceivedBundle("app", "1.0", "t1", 5000, 5, 50)
    assert await store.bundles() == [bundle] and await store.bundle("app", "1.0") == bundle
    assert await store.published_repos("app", "1.0") == ["other-local", REPO]
    assert await store.published_page("app", "1.0", REPO, "") == [(p, sha(p), len(p)) for p in paths[:3]]
    assert await store.published_page("app", "1.0", REPO, "b") == [("c", sha("c"), 1)]
    with pytest.raises(Conflict, match="is COMMITTED"):
        await committed(database, tx)
    assert await rows(database, "SELECT count(*) FROM received_bundles") == [(1,)]


async def test_a_bundle_change_is_recorded_once_and_a_removal_drops_its_claims_and_transaction(
    database: Database, tmp_path: Path
) -> None:
    store, claims = EdgeStore(database), BundleClaims(database)
    paths = [f"p{i}" for i in range(7)]
    tx = transaction("t1", [file(p, p) for p in paths])
    await started(database, tmp_path, tx, [file(p, p) for p in paths])
    await database.run(claims.claim_rows, tx, [(REPO, p) for p in paths])
    await committed(database, tx)
    removal = BundleChange("app", "1.0", "t1", REMOVE, "key")
    await database.run(claims.begin_removal_rows, removal)
    with pytest.raises(Conflict, match="is being changed"):
        await database.run(claims.begin_rows, BundleChange("app", "1.0", "t1", COMMIT, "other"))
    assert await claims.changes() == [removal] and await claims.change("app", "1.0") == removal
    assert await store.bundles() == []
    assert await claims.first_claims("app", "1.0", PAGE) == [(REPO, p) for p in paths[:PAGE]]
    assert await claims.removal_progress(removal) == (7, 7)
    await database.run(claims.drop_claim_rows, removal, await claims.first_claims("app", "1.0", 2))
    assert await claims.removal_progress(removal) == (5, 7)
    assert await claims.drop_transaction_blobs("t1") == PAGE
    while await claims.drop_transaction_blobs("t1"):
        pass
    assert await rows(database, "SELECT * FROM transaction_blobs") == []
    await database.run(claims.end_removal_rows, removal)
    assert await claims.changes() == [] and await store.get("t1") is None
    assert await rows(database, "SELECT * FROM transaction_manifest_chunks") == []
    assert await claims.removal_progress(removal) == (5, 0)


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE + 1])
async def test_paths_another_bundle_claims_too_are_found_with_that_bundle_on_every_page(
    database: Database, count: int
) -> None:
    claims = BundleClaims(database)
    mine = [f"p{i:02d}" for i in range(count)]
    shared = mine[::2]
    await database.run(claims.claim_rows, transaction("t1", []), [(REPO, p) for p in mine])
    await database.run(claims.claim_rows, transaction("t2", [], "other", "2"), [(REPO, p) for p in shared])
    await database.run(claims.claim_rows, transaction("t3", [], "zzz", "3"), [(REPO, p) for p in mine])
    found = [page async for page in claims.shared_claims("app", "1.0")]
    assert all(found)  # no empty pages
    expected = {(REPO, p): bundle_owner("other", "2") if p in shared else bundle_owner("zzz", "3") for p in mine}
    assert {k: v for page in found for k, v in page.items()} == expected


async def test_a_manifests_files_are_recorded_read_a_page_at_a_time_and_dropped(database: Database) -> None:
    files = TransactionFiles(database)
    mine = [TransactionFile("r2", f"p{i}", sha(str(i)), i, "1" * 40, "5" * 32, {"k": [str(i)]}) for i in range(5)]
    await files.add("t1", mine[:2])
    await files.add("t1", mine[2:] + [TransactionFile("r1", "x", sha("x"), 1, "1" * 40, "5" * 32, {})])
    await files.add("t2", [file("y", "y")])
    await files.check_sizes("t1")
    assert await files.repos("t1") == ["r1", "r2"]
    pages = [page async for page in files.pages("t1")]
    assert [len(p) for p in pages] == [PAGE, PAGE]
    assert [f for p in pages for f in p][1:] == mine
    await files.add("t2", [file("z", "y", size=11)])
    with pytest.raises(ManifestError, match=f"sha256 {sha('y')} is listed with two sizes"):
        await files.check_sizes("t2")
    await files.drop("t1")
    assert [page async for page in files.pages("t1")] == []
    await files.sweep()  # t2 has no OPEN transaction
    assert await rows(database, "SELECT * FROM transaction_files") == []


async def test_a_key_alias_names_one_key_and_a_second_add_answers_what_it_names(database: Database) -> None:
    store = EdgeStore(database)
    first = KeyAlias("main", "A" * 40, 1)
    assert await store.add_key_alias(first) == (first, True)
    assert await store.add_key_alias(KeyAlias("main", "B" * 40, 2)) == (first, False)
    await store.add_key_alias(KeyAlias("Zeta", "B" * 40, 3))
    assert [k.alias for k in await store.key_aliases()] == ["Zeta", "main"]  # by code point
    await store.remove_key_alias("main")
    assert await store.key_aliases() == [KeyAlias("Zeta", "B" * 40, 3)]


async def test_manifests_stored_whole_before_come_back_byte_for_byte_from_their_chunks(tmp_path: Path) -> None:
    """sqlite files from before the manifest chunks: each manifest is cut into MiB rows at start-up."""
    path = tmp_path / "edge.db"
    old = sqlite_utils.Database(sqlite3.connect(path))
    catalog_migrations.apply(old)
    edge_migrations.apply(old, stop_before="m010_manifest_chunks")
    sizes = {"empty": 0, "one": 1, "under": MIB - 1, "exact": MIB, "over": MIB + 1, "three": 2 * MIB + 1}
    manifests = {tx_id: os.urandom(size) for tx_id, size in sizes.items()}
    for tx_id, manifest in manifests.items():
        old.execute(
            "INSERT INTO transactions (id, name, version, state, signature, signer, created, expires, committed,"
            " files, bytes) VALUES (?, 'app', ?, 'COMMITTED', 'sig', 'fpr', 1, 2, 3, 0, 0)",
            [tx_id, tx_id],
        )
        old.execute("INSERT INTO transaction_manifests VALUES (?, ?)", [tx_id, manifest])
    old.conn.commit()
    old.close()

    db = await opened(str(path), tmp_path / "local")
    try:
        for tx_id, manifest in manifests.items():
            await EdgeStore(db).manifest_to(tx_id, tmp_path / tx_id)
            assert (tmp_path / tx_id).read_bytes() == manifest, tx_id
        counts = dict(await rows(db, "SELECT transaction_id, count(*) FROM transaction_manifest_chunks GROUP BY 1"))
        assert counts == {"one": 1, "under": 1, "exact": 1, "over": 2, "three": 3}
    finally:
        await db.close()
