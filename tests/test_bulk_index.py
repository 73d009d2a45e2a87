"""Changes of many index entries a page at a time (``repository.bulk``), on both engines:
readers see all of a bundle or none of it, at every page, and after a restart in the middle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from repository import bulk
from repository.catalog import Artifact, Catalog, Repo
from repository.db import Database
from repository.errors import Conflict, PathOwned
from repository.schema import catalog_migrations

PAGE = 4  # small pages, so a handful of files crosses several of them
OWNER = "bundle:app/1.0"


def artifact(path: str, repo: str = "bundles", sha: str = "a" * 64, owner: str = OWNER) -> Artifact:
    return Artifact(repo, path, sha, "b" * 40, "c" * 32, 1, "application/octet-stream", 1, "u", 1, "u", owner)


def files(count: int, owner: str = OWNER) -> list[Artifact]:
    return [artifact(f"app/d{i // 3}/f{i:03d}.bin", sha=f"{i:064x}", owner=owner) for i in range(count)]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PAGE", PAGE)


async def open_catalog(target: str, local_dir: Path) -> tuple[Database, Catalog]:
    db = Database(target, local_dir=local_dir)
    await db.open(catalog_migrations)
    catalog = Catalog(db)
    await catalog.ensure_repo(Repo("r"))
    return db, catalog


@pytest.fixture
async def catalog(db_target: str, tmp_path: Path) -> AsyncIterator[Catalog]:
    db, cat = await open_catalog(db_target, tmp_path / "local")
    yield cat
    await db.close()


@pytest.fixture
async def replica(db_target: str, tmp_path: Path, catalog: Catalog) -> AsyncIterator[Catalog]:
    """The same catalog as another process serves it (on PostgreSQL, a replica on another machine)."""
    db, cat = await open_catalog(db_target, tmp_path / "replica")
    yield cat
    await db.close()


async def seen(catalog: Catalog, entries: list[Artifact]) -> dict[str, int]:
    """What readers see of ``entries``, each way they can look: how many they find."""
    found = {
        "files": sum([await catalog.get_artifact(a.repo, a.path) is not None for a in entries]),
        "walk": len([a async for a in catalog.walk_files("bundles", "")]) if await catalog.get_repo("bundles") else 0,
        "holders": sum([len([h async for h in catalog.holders("sha256", a.sha256)]) for a in entries]),
        "folders": int(await catalog.get_folder("bundles", "app") is not None),
        "repo": int(await catalog.get_repo("bundles") is not None)
        + len([r for r in await catalog.list_repos() if r.key == "bundles"]),
    }
    return found


def none_seen() -> dict[str, int]:
    return {"files": 0, "walk": 0, "holders": 0, "folders": 0, "repo": 0}


def all_seen(count: int) -> dict[str, int]:
    return {"files": count, "walk": count, "holders": count, "folders": int(count > 0), "repo": 2}


async def index_rows(catalog: Catalog) -> list[tuple[str, ...]]:
    """Every stored row of the index, visible or not: what "nothing left" is checked against."""

    def rows() -> list[tuple[str, ...]]:
        db = catalog._database.db
        return sorted(
            [
                *db.execute("SELECT 'file', repo || '/' || path, owner FROM artifacts").fetchall(),
                *db.execute("SELECT 'folder', repo || '/' || path, '' FROM folders").fetchall(),
                *db.execute("SELECT 'repo', key, '' FROM repos").fetchall(),
                *db.execute("SELECT 'change', key, owner FROM bulk_changes").fetchall(),
            ]
        )

    return await catalog._database.run(rows)


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 1])
async def test_a_publish_in_pages_shows_every_entry_once_it_is_done(catalog: Catalog, count: int) -> None:
    entries = files(count)
    await catalog.publish(entries, [Repo("bundles")])
    assert await seen(catalog, entries) == all_seen(count)
    assert (
        await catalog._database.run(lambda: catalog._database.db.execute("SELECT * FROM bulk_changes").fetchall()) == []
    )


async def test_readers_see_nothing_of_a_publish_until_its_last_step_and_then_everything(catalog: Catalog) -> None:
    entries = files(3 * PAGE + 1)
    index = catalog.bulk
    await index.begin_publish("k1", OWNER, [Repo("bundles")])
    for page in bulk.pages(entries):
        await index.publish_page("k1", page)
        assert await seen(catalog, entries) == none_seen()
    await index.finish("k1")
    assert await seen(catalog, entries) == all_seen(len(entries))


async def test_writers_respect_the_paths_a_publish_in_progress_holds(catalog: Catalog) -> None:
    entries = files(PAGE + 1)
    await catalog.bulk.begin_publish("k1", OWNER, [Repo("bundles")])
    await catalog.bulk.publish_page("k1", entries[:PAGE])
    held = entries[0]
    with pytest.raises(PathOwned):  # an upload cannot take a path a bundle is publishing
        await catalog.put_artifact(replace(held, sha256="f" * 64, owner="upload"))
    assert await catalog.conflicts([(held.repo, held.path, "f" * 64)]) == [f"{held.repo}/{held.path}"]
    with pytest.raises(Conflict):  # nor can another publish
        await catalog.publish([replace(held, sha256="f" * 64, owner="bundle:other/1")], [Repo("bundles")])
    await catalog.bulk.publish_page("k1", entries[PAGE:])
    await catalog.bulk.finish("k1")
    assert await seen(catalog, entries) == all_seen(len(entries))


@pytest.mark.parametrize("pages_done", [0, 1, 2])
async def test_a_publish_cut_short_by_a_restart_shows_nothing_and_is_removed_whole(
    db_target: str, tmp_path: Path, pages_done: int
) -> None:
    db, catalog = await open_catalog(db_target, tmp_path / "local")
    await catalog.put_artifact(artifact("app/d0/kept.bin", repo="r", owner="upload"))
    before = await index_rows(catalog)
    entries = files(3 * PAGE)
    await catalog.bulk.begin_publish("k1", OWNER, [Repo("bundles")])
    for page in list(bulk.pages(entries))[:pages_done]:
        await catalog.bulk.publish_page("k1", page)
    await db.close()  # the process stops here

    db, catalog = await open_catalog(db_target, tmp_path / "local")
    assert await seen(catalog, entries) == none_seen()
    [change] = await catalog.bulk.changes()
    assert (change.key, change.owner, change.action) == ("k1", OWNER, "publish")
    await catalog.bulk.abandon("k1", OWNER, [(a.repo, a.path) for a in entries])
    assert await index_rows(catalog) == before
    assert await catalog.get_artifact("r", "app/d0/kept.bin") is not None
    await db.close()


async def test_a_refused_page_removes_the_pages_before_it_and_changes_nothing(catalog: Catalog) -> None:
    await catalog.ensure_repo(Repo("bundles"))
    await catalog.put_artifact(artifact("app/d2/f007.bin", sha="1" * 64, owner="upload"))  # other bytes, page 2
    before = await index_rows(catalog)
    with pytest.raises(Conflict):
        await catalog.publish(files(3 * PAGE), [Repo("bundles")])
    assert await index_rows(catalog) == before


async def test_the_same_bytes_published_again_keep_their_entry_visible_throughout(catalog: Catalog) -> None:
    first = files(PAGE + 1, owner="bundle:app/0.9")
    await catalog.publish(first, [Repo("bundles")])
    again = [replace(a, owner=OWNER) for a in first]
    await catalog.bulk.begin_publish("k2", OWNER, [Repo("bundles")])
    for page in bulk.pages(again):
        await catalog.bulk.publish_page("k2", page)
        assert await seen(catalog, first) == all_seen(len(first))
    await catalog.bulk.abandon("k2", OWNER, [(a.repo, a.path) for a in again])
    assert await seen(catalog, first) == all_seen(len(first)), "abandoning the second keeps the first's"


async def test_an_unpublish_hides_every_entry_at_once_and_a_restart_keeps_them_hidden(
    db_target: str, tmp_path: Path
) -> None:
    db, catalog = await open_catalog(db_target, tmp_path / "local")
    entries = files(3 * PAGE + 1)
    other = artifact("app/other.bin", repo="r", sha="e" * 64, owner="upload")
    await catalog.put_artifact(other)
    await catalog.publish(entries, [Repo("bundles")])
    for a in [other, *entries]:
        assert await catalog.get_artifact(a.repo, a.path) is not None  # now cached
    shared = entries[0]
    await catalog.bulk.reassign(OWNER, {(shared.repo, shared.path): "bundle:app/2.0"})
    await catalog.bulk.begin_unpublish("k3", OWNER)
    rest = entries[1:]
    assert await seen(catalog, rest) == {"files": 0, "walk": 1, "holders": 0, "folders": 1, "repo": 2}
    assert await catalog.get_artifact(shared.repo, shared.path) == replace(shared, owner="bundle:app/2.0")
    assert await catalog.get_artifact(other.repo, other.path) == other
    assert (other.repo, other.path) in catalog._artifacts, "the cache keeps what did not change"
    await catalog.bulk.remove_page(OWNER, [(a.repo, a.path) for a in rest[:PAGE]])
    await db.close()  # the process stops here

    db, catalog = await open_catalog(db_target, tmp_path / "local")
    assert sum([await catalog.get_artifact(a.repo, a.path) is not None for a in rest]) == 0
    for page in bulk.pages(rest[PAGE:]):
        removed = await catalog.bulk.remove_page(OWNER, [(a.repo, a.path) for a in page])
        assert removed == [a.sha256 for a in page]
    await catalog.bulk.finish("k3")
    assert await catalog.bulk.changes() == []
    assert [a.path async for a in catalog.walk_files("bundles", "")] == [shared.path]
    await db.close()


async def test_a_hidden_entry_is_not_served_from_the_cache(catalog: Catalog) -> None:
    entries = files(2)
    await catalog.publish(entries, [Repo("bundles")])
    assert await catalog.get_artifact(entries[0].repo, entries[0].path) is not None
    await catalog.bulk.begin_unpublish("k4", OWNER)
    assert await catalog.get_artifact(entries[0].repo, entries[0].path) is None


async def test_replicas_publishing_other_bytes_at_the_same_paths_at_once_let_exactly_one_win(
    catalog: Catalog, replica: Catalog
) -> None:
    """Each checks the paths, then writes them: the one that loses the race is refused (409) and
    removes what it indexed, whichever engine decides who lost."""
    mine = files(3 * PAGE + 1)
    theirs = [replace(a, sha256=f"f{i:063x}", owner="bundle:other/1.0") for i, a in enumerate(mine)]
    results = await asyncio.gather(
        catalog.publish(mine, [Repo("bundles")]), replica.publish(theirs, [Repo("bundles")]), return_exceptions=True
    )
    assert sorted(isinstance(r, Conflict) for r in results) == [False, True], results
    winner = mine if results[0] is None else theirs
    for reader in (catalog, replica):
        assert await seen(reader, winner) == all_seen(len(winner))
        assert [a async for a in reader.walk_files("bundles", "")] == sorted(winner, key=lambda a: a.path)
    assert [row for row in await index_rows(catalog) if row[0] in ("file", "change")] == sorted(
        ("file", f"bundles/{a.path}", winner[0].owner) for a in winner
    )


async def test_replicas_publishing_the_same_bundle_at_once_both_succeed_and_index_each_entry_once(
    catalog: Catalog, replica: Catalog
) -> None:
    entries = files(3 * PAGE + 1)
    await asyncio.gather(catalog.publish(entries, [Repo("bundles")]), replica.publish(entries, [Repo("bundles")]))
    for reader in (catalog, replica):
        assert await seen(reader, entries) == all_seen(len(entries))
    stored = await index_rows(catalog)
    assert [row for row in stored if row[0] in ("file", "change")] == sorted(
        ("file", f"bundles/{a.path}", OWNER) for a in entries
    )
    assert [row[1] for row in stored if row[0] == "repo"] == ["bundles", "r"]


async def test_replicas_publishing_different_bundles_while_files_are_uploaded_index_every_one(
    catalog: Catalog, replica: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes of unrelated paths, side by side in the tables, never refuse each other, however
    many run at once (on PostgreSQL they would take each other for races, run again and again,
    and give up)."""
    monkeypatch.setattr(bulk, "PAGE", 1000)  # pages of the real size
    bundles = [
        [artifact(f"{name}/d{i // 1000}/f{i:04d}.bin", sha=f"{n}{i:063x}", owner=f"bundle:{name}") for i in range(5000)]
        for n, name in enumerate(["app/1.0", "lib/2.0"])
    ]
    uploads = [artifact(f"up/{i:03d}.bin", sha="e" * 64, owner="upload") for i in range(200)]
    await asyncio.gather(
        catalog.publish(bundles[0], [Repo("bundles")]),
        replica.publish(bundles[1], [Repo("bundles")]),
        *(writer.put_artifact(a) for writer, a in zip([catalog, replica] * 100, uploads, strict=True)),
    )
    for reader in (catalog, replica):
        assert [a.path async for a in reader.walk_files("bundles", "")] == sorted(
            a.path for a in bundles[0] + bundles[1] + uploads
        )
        assert [a.path async for a in reader.walk_files("bundles", "up")] == [a.path for a in uploads]
