"""Properties in the catalog, on sqlite and PostgreSQL: the search index always says what the files
say, whichever way a file was written, changed, published in bulk or removed."""

from __future__ import annotations

import pytest

from repository.catalog import DEEP_LIST_PAGE, Artifact, Catalog, Repo
from repository.errors import BadRequest, NotFound
from repository.property_store import PropertyChange, PropertyStore
from repository.property_syntax import PropertySyntaxError


def artifact(path: str, props: dict[str, list[str]] | None = None, owner: str = "upload") -> Artifact:
    return Artifact(
        "r", path, "a" * 64, "b" * 40, "c" * 32, 1, "application/octet-stream", 1, "u", 1, "u", owner, props or {}
    )


async def found(catalog: Catalog, **criteria: list[str]) -> list[str]:
    return [a.path async for a in PropertyStore(catalog).search(criteria, None)]


def indexed(catalog: Catalog) -> list[tuple[str, ...]]:
    rows = catalog.database.db.execute("SELECT repo, path, key, value FROM properties ORDER BY 1, 2, 3, 4")
    return [tuple(r) for r in rows]


async def test_the_index_follows_every_write_of_a_file(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("a/1.bin", {"stage": ["qa", "prod"], "ok": ["true"]}))
    await catalog.put_artifact(artifact("a/2.bin", {"ok": ["false"]}))
    assert await found(catalog, ok=["true"]) == ["a/1.bin"]
    assert await found(catalog, ok=["true", "false"]) == ["a/1.bin", "a/2.bin"]
    assert await found(catalog, ok=["true"], stage=["prod"]) == ["a/1.bin"]
    assert await found(catalog, ok=["false"], stage=["prod"]) == []
    await catalog.put_artifact(artifact("a/1.bin", {"ok": ["false"]}))  # an overwrite starts afresh
    assert await found(catalog, ok=["false"]) == ["a/1.bin", "a/2.bin"]
    assert await found(catalog, stage=["prod"]) == []
    await catalog.delete("r", "a/2.bin", owner="upload")
    assert indexed(catalog) == [("r", "a/1.bin", "ok", "false")]


async def test_a_bulk_publish_is_searchable_once_it_shows_and_gone_when_removed(catalog: Catalog) -> None:
    files = [artifact(f"b/{i}.bin", {"bundle": ["app-1"]}, owner="bundle:app/1") for i in range(3)]
    await catalog.publish(files, [Repo("r")])
    assert await found(catalog, bundle=["app-1"]) == ["b/0.bin", "b/1.bin", "b/2.bin"]
    await catalog.delete("r", "b", owner="bundle:app/1")
    assert await found(catalog, bundle=["app-1"]) == [] and indexed(catalog) == []


async def test_a_recursive_change_reaches_every_file_below_a_folder_page_by_page(catalog: Catalog) -> None:
    count = DEEP_LIST_PAGE + 1  # more than one page
    for i in range(count):
        await catalog.put_artifact(artifact(f"f/{i:05}.bin"))
    await catalog.put_artifact(artifact("g/outside.bin"))
    store = PropertyStore(catalog)
    assert await store.change("r", "f", PropertyChange(put={"ok": ["yes"]}), recursive=True) == count
    assert len(await found(catalog, ok=["yes"])) == count
    assert await store.change("r", "f", PropertyChange(remove=("ok",)), recursive=True) == count
    assert indexed(catalog) == []


async def test_a_change_that_breaks_a_limit_on_any_file_changes_no_file(catalog: Catalog) -> None:
    full = {f"k{i}": ["v"] for i in range(100)}
    await catalog.put_artifact(artifact("h/a.bin"))
    await catalog.put_artifact(artifact("h/z.bin", full))
    before = indexed(catalog)
    with pytest.raises(PropertySyntaxError, match="r/h/z.bin: 101 properties given"):
        await PropertyStore(catalog).change("r", "h", PropertyChange(put={"new": ["1"]}), recursive=True)
    assert indexed(catalog) == before


async def test_folders_and_missing_paths_are_refused(catalog: Catalog) -> None:
    await catalog.put_artifact(artifact("i/a.bin"))
    store = PropertyStore(catalog)
    with pytest.raises(BadRequest, match="Folders hold no properties of their own"):
        await store.change("r", "i", PropertyChange(put={"a": ["1"]}), recursive=False)
    with pytest.raises(NotFound):
        await store.change("r", "nothing", PropertyChange(put={"a": ["1"]}), recursive=True)
    assert indexed(catalog) == []
