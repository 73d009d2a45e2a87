"""The catalog, on both engines: migrations at start, folder bookkeeping, and work that does
not grow with size.

Speed is not timed here (machines are noisy); instead the engine's own count of work done
(sqlite's virtual-machine instructions, PostgreSQL's rows read) shows that a lookup or a
listing touches a handful of rows whether the catalog holds ten artifacts or a few hundred
thousand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from repository.catalog import DEEP_LIST_PAGE, Artifact, Catalog, Repo
from repository.db import Database
from repository.entries import insert_artifacts
from repository.errors import Conflict, NotFound
from repository.schema import catalog_migrations


def artifact(path: str, repo: str = "r", sha: str = "a" * 64) -> Artifact:
    return Artifact(repo, path, sha, "b" * 40, "c" * 32, 1, "application/octet-stream", 1, "u", 1, "u", "upload")


@pytest.fixture
async def replica(db_target: str, tmp_path: Path, catalog: Catalog) -> AsyncIterator[Catalog]:
    """The same catalog as another process serves it (on PostgreSQL, a replica on another machine)."""
    db = Database(db_target, local_dir=tmp_path / "replica")
    await db.open(catalog_migrations)
    yield Catalog(db)
    await db.close()


def _applied(db: Database) -> list[str]:
    if db.dialect == "sqlite":
        return [m.name for m in catalog_migrations.applied(sqlite_utils.Database(db.db.conn))]
    rows = db.db.execute("SELECT name FROM schema_migrations WHERE migration_set = 'catalog' ORDER BY name")
    return [name for (name,) in rows]


async def test_migrations_apply_once_and_reopen_cleanly(db_target: str, tmp_path: Path) -> None:
    for _ in range(2):
        db = Database(db_target, local_dir=tmp_path / "local")
        await db.open(catalog_migrations)
        applied = await db.run(_applied, db)
        assert applied == [
            "m001_repos_artifacts_folders",
            "m002_tokens",
            "m003_quarantine_leases_scrub",
            "m004_bulk_changes",
            "m005_properties",
        ]
        await db.close()


async def test_files_create_their_folders_and_deletes_remove_subtrees(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("a/b/c.bin"))
    await catalog.put_artifact(artifact("a/d.bin"))
    assert await catalog.get_folder("r", "a/b") is not None
    listing = await catalog.children("r", "a")
    assert [f.path for f in listing.folders] == ["a/b"]
    assert [f.path for f in listing.files] == ["a/d.bin"]
    removed = await catalog.delete("r", "a/b", owner="upload")
    assert [a.path for a in removed] == ["a/b/c.bin"]
    assert await catalog.get_folder("r", "a/b") is None
    assert await catalog.get_artifact("r", "a/d.bin") is not None
    with pytest.raises(NotFound):
        await catalog.delete("r", "a/b", owner="upload")


async def test_replicas_writing_into_the_same_new_repo_and_folders_at_once_index_each_file_and_folder_once(
    catalog: Catalog, replica: Catalog
) -> None:
    paths = [f"a/b/{i:02d}.bin" for i in range(20)]
    writers = [catalog, replica]
    await asyncio.gather(*(writer.ensure_repo(Repo("new")) for writer in writers))
    await asyncio.gather(
        *(writers[i % 2].put_artifact(artifact(path, repo="new")) for i, path in enumerate(paths)),
        *(writers[i % 2].make_folder("new", f"a/b/{i:02d}", "u") for i in range(20, 30)),
    )
    for reader in writers:
        assert [a.path async for a in reader.walk_files("new", "")] == paths
        listing = await reader.children("new", "a/b")
        assert [f.path for f in listing.folders] == [f"a/b/{i}" for i in range(20, 30)]
        assert [r.key for r in await reader.list_repos()] == ["new", "r"]
    assert [row for row in await index_of(catalog) if row[0] == "folder"] == sorted(
        ("folder", f"new/{path}", "u") for path in ["a", "a/b", *(f"a/b/{i}" for i in range(20, 30))]
    )


async def test_a_path_is_either_a_file_or_a_folder(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("a/b.bin"))
    with pytest.raises(Conflict):
        await catalog.put_artifact(artifact("a"))
    with pytest.raises(Conflict):
        await catalog.put_artifact(artifact("a/b.bin/c"))
    assert [a.path async for a in catalog.walk_files("r", "")] == ["a/b.bin"]


async def test_deep_walks_page_through_every_file_in_order(catalog: Catalog) -> None:
    paths = sorted(f"d/{i:05d}.bin" for i in range(2500)) + ["d0.bin", "e/x.bin"]
    await catalog._database.run(_bulk_insert, catalog, [artifact(p) for p in paths])
    walked = [a.path async for a in catalog.walk_files("r", "d")]
    assert walked == [p for p in paths if p.startswith("d/")]


@pytest.mark.parametrize(
    "count", [0, 1, DEEP_LIST_PAGE - 1, DEEP_LIST_PAGE, DEEP_LIST_PAGE + 1, 2 * DEEP_LIST_PAGE + 1]
)
async def test_every_holder_of_some_bytes_is_found_across_pages_by_either_checksum(
    catalog: Catalog, count: int
) -> None:
    """A checksum deploy looks through them for one its caller may read: none may be skipped."""
    held = [replace(artifact(f"h/{i:05d}.bin", sha="d" * 64), sha1="e" * 40) for i in range(count)]
    other = [artifact("h/other.bin", sha="f" * 64), artifact("g/other.bin", sha="f" * 64)]
    await catalog._database.run(_bulk_insert, catalog, [*held, *other])
    for algorithm, value in (("sha256", "D" * 64), ("sha1", "e" * 40)):
        assert [a.path async for a in catalog.holders(algorithm, value)] == [a.path for a in held]


def _bulk_insert(catalog: Catalog, artifacts: list[Artifact]) -> None:
    """Insert rows as a bulk import would, then refresh PostgreSQL's statistics as its
    autovacuum does within a minute: a plan made from the figures of a 100-row table (every
    row in one folder) reads all 200,100 rows, and whether autovacuum had sampled the small
    table before the big insert is a race no test should depend on."""
    db = catalog._database.db
    with db.atomic():
        db.executemany(insert_artifacts(), [a.row() for a in artifacts])
        if db.dialect != "sqlite":
            db.execute("ANALYZE artifacts")


def _work(catalog: Catalog, fn: Callable[[], Any]) -> int:
    """The work ``fn`` makes the engine do, not wall time: on sqlite the virtual-machine
    instructions it executes; on PostgreSQL the rows its scans read (of tables, and of tables
    through their indexes), counted before and after it in one transaction (the server's
    per-transaction counters also hold earlier transactions' until it writes them out)."""
    db = catalog._database.db
    if db.dialect == "sqlite":
        return _vm_steps(db.conn, fn)
    rows_read = "SELECT sum(seq_tup_read + coalesce(idx_tup_fetch, 0)) FROM pg_stat_xact_user_tables"
    with db.atomic():
        before = int(db.scalar(rows_read) or 0)
        fn()
        return int(db.scalar(rows_read) or 0) - before


def _vm_steps(conn: Any, fn: Callable[[], Any]) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        fn()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


async def test_lookups_and_listings_do_not_grow_with_the_catalog(catalog: Catalog) -> None:
    def work() -> list[int]:
        return [
            _work(catalog, lambda: catalog._get_artifact("r", "big/folder/00042.bin")),
            _work(catalog, lambda: catalog._children("r", "big/folder")),
            _work(catalog, lambda: catalog._holders("sha256", "f" * 64, ("", ""))),
        ]

    await catalog._database.run(_bulk_insert, catalog, [artifact(f"big/folder/{i:05d}.bin") for i in range(100)])
    small = await catalog._database.run(work)
    # 200,000 more artifacts in other folders, a thousand per folder.
    await catalog._database.run(
        _bulk_insert,
        catalog,
        [artifact(f"other/{i // 1000:04d}/{i:07d}.bin", sha=f"{i:064x}") for i in range(200_000)],
    )
    large = await catalog._database.run(work)
    for before, after in zip(small, large, strict=True):
        assert after < before * 2 + 50, (small, large)


# -- bulk publish, as a bundle commit does -------------------------------------------------


def bundle_files(count: int, repo: str = "bundles") -> list[Artifact]:
    return [artifact(f"app/1.0/d{i // 100:02d}/f{i:04d}.bin", repo=repo, sha=f"{i:064x}") for i in range(count)]


async def index_of(catalog: Catalog) -> list[tuple[str, str, str]]:
    """Every entry and folder, as stored: what "nothing changed" is checked against."""

    def rows() -> list[tuple[str, str, str]]:
        db = catalog._database.db
        files = db.execute("SELECT 'file', repo || '/' || path, sha256 || ' ' || owner FROM artifacts").fetchall()
        folders = db.execute("SELECT 'folder', repo || '/' || path, created_by FROM folders").fetchall()
        return sorted(files + folders)

    return await catalog._database.run(rows)


async def test_a_publish_of_many_files_indexes_all_of_them_with_their_folders_in_a_new_repo(catalog: Catalog) -> None:
    files = bundle_files(1234)  # more paths than one lookup query takes
    await catalog.publish(files, [Repo("bundles")])
    assert await catalog.get_repo("bundles") is not None
    assert [a.path async for a in catalog.walk_files("bundles", "")] == sorted(a.path for a in files)
    listing = await catalog.children("bundles", "app/1.0")
    assert [f.path for f in listing.folders] == [f"app/1.0/d{i:02d}" for i in range(13)]
    assert await catalog.conflicts([(a.repo, a.path, a.sha256) for a in files]) == [], "the same bytes again"


async def test_publishing_the_same_bytes_again_keeps_the_entry_as_it_is(catalog: Catalog) -> None:
    """The path's first owner keeps it (an edge records the second bundle's claim beside it), so
    the entry never leaves readers' view while the second publish is under way."""
    first = replace(artifact("app/x.bin"), created=5, created_by="first")
    await catalog.put_artifact(first)
    again = replace(first, created=9, created_by="second", owner="bundle:app/2.0")
    await catalog.publish([again, *bundle_files(3, repo="r")], [Repo("r")])
    assert await catalog.get_artifact("r", "app/x.bin") == first


async def test_conflicts_names_every_path_that_cannot_take_its_file_in_the_order_asked(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("held/same.bin", sha="1" * 64))
    await catalog.put_artifact(artifact("held/other.bin", sha="1" * 64))
    await catalog.put_artifact(artifact("file.bin"))
    await catalog.put_artifact(artifact("folder/inside.bin"))
    fine = [("r", f"new/{i:04d}.bin", f"{i:064x}") for i in range(600)]
    asked = [
        *fine[:300],
        ("r", "held/same.bin", "1" * 64),  # the same bytes: fine
        ("r", "held/other.bin", "2" * 64),  # other bytes
        ("r", "folder", "3" * 64),  # a folder
        ("r", "file.bin/below.bin", "4" * 64),  # below a file
        *fine[300:],
        ("r", "file.bin/a/b/c.bin", "5" * 64),  # deeper below the same file
    ]
    assert await catalog.conflicts(asked) == [
        "r/held/other.bin",
        "r/folder",
        "r/file.bin/below.bin",
        "r/file.bin/a/b/c.bin",
    ]


@pytest.mark.parametrize(
    "clash",
    ["other bytes at a path", "a folder at a path", "a path below a stored file", "a path below another of its files"],
)
async def test_a_publish_that_cannot_be_done_whole_is_refused_and_changes_nothing(catalog: Catalog, clash: str) -> None:
    await catalog.put_artifact(artifact("bundles-held/file.bin", sha="1" * 64))
    await catalog.put_artifact(artifact("bundles-held/folder/inside.bin", sha="1" * 64))
    before = await index_of(catalog)
    bad = {
        "other bytes at a path": artifact("bundles-held/file.bin", sha="2" * 64),
        "a folder at a path": artifact("bundles-held/folder"),
        "a path below a stored file": artifact("bundles-held/file.bin/x.bin"),
        "a path below another of its files": artifact("app/1.0/d00/f0007.bin/x.bin", repo="bundles"),
    }[clash]
    files = bundle_files(700)
    with pytest.raises(Conflict):
        await catalog.publish([*files[:350], bad, *files[350:]], [Repo("bundles")])
    assert await index_of(catalog) == before
    assert await catalog.get_repo("bundles") is None, "not even the repo it would have created"
