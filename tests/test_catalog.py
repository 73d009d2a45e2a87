"""The catalog: migrations at start, folder bookkeeping, and work that does not grow with size.

Speed is not timed here (machines are noisy); instead sqlite's own instruction
counter shows that a lookup or a listing touches a handful of rows whether the
catalog holds ten artifacts or a few hundred thousand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from repository.catalog import Artifact, Catalog, Repo
from repository.db import Database
from repository.errors import Conflict, NotFound
from repository.schema import catalog_migrations


def artifact(path: str, repo: str = "r", sha: str = "a" * 64) -> Artifact:
    return Artifact(repo, path, sha, "b" * 40, "c" * 32, 1, "application/octet-stream", 1, "u", 1, "u", "upload")


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Catalog]:
    db = Database(tmp_path / "catalog.db")
    await db.open(catalog_migrations)
    cat = Catalog(db)
    await cat.ensure_repo(Repo("r"))
    yield cat
    await db.close()


def _applied(db: Database) -> list[str]:
    return [m.name for m in catalog_migrations.applied(db.db)]


async def test_migrations_apply_once_and_reopen_cleanly(tmp_path: Path) -> None:
    for _ in range(2):
        db = Database(tmp_path / "c.db")
        await db.open(catalog_migrations)
        applied = await db.run(_applied, db)
        assert applied == ["m001_repos_artifacts_folders", "m002_tokens"]
        await db.close()


async def test_files_create_their_folders_and_deletes_remove_subtrees(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("a/b/c.bin"))
    await catalog.put_artifact(artifact("a/d.bin"))
    assert await catalog.get_folder("r", "a/b") is not None
    listing = await catalog.children("r", "a")
    assert [f.path for f in listing.folders] == ["a/b"]
    assert [f.path for f in listing.files] == ["a/d.bin"]
    removed = await catalog.delete("r", "a/b")
    assert [a.path for a in removed] == ["a/b/c.bin"]
    assert await catalog.get_folder("r", "a/b") is None
    assert await catalog.get_artifact("r", "a/d.bin") is not None
    with pytest.raises(NotFound):
        await catalog.delete("r", "a/b")


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


def _bulk_insert(catalog: Catalog, artifacts: list[Artifact]) -> None:
    db = catalog._database.db
    with db.atomic():
        rows = [a.row() for a in artifacts]
        cols = ", ".join(rows[0])
        db.conn.executemany(
            f"INSERT INTO artifacts ({cols}) VALUES ({', '.join('?' * len(rows[0]))})", [list(r.values()) for r in rows]
        )


def _vm_steps(catalog: Catalog, fn: Callable[[], Any]) -> int:
    """sqlite virtual-machine instructions executed by ``fn``: work done, not wall time."""
    conn = catalog._database.db.conn
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
            _vm_steps(catalog, lambda: catalog._get_artifact("r", "big/folder/00042.bin")),
            _vm_steps(catalog, lambda: catalog._children("r", "big/folder")),
            _vm_steps(catalog, lambda: catalog._find_by_checksum("sha256", "f" * 64)),
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
