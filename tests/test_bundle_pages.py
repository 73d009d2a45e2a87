"""Bundles handled a page at a time: with pages of two files, create, dry run, update, sign,
answer, push and verify make exactly the bundle a single page would, and a refusal found on a
later page leaves nothing stored or staged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from devstack.services import EdgeProcess
from distribution import bundle_store, push
from distribution.keys import bundles_key
from repository import catalog
from tests.conftest import admin
from tests.edge_setup import download
from tests.test_distribution_jobs import COMPLETED, distribute, finished, trusted_edge, wait_for
from tests.test_distribution_jobs import dist as dist  # noqa: F401  (the fixture)
from wire.manifest import decode

V1 = "/distribution/api/v1"
REPO = "releases-local"
# Seven files over four pages: unicode and reserved characters, and one blob at two paths.
FILES = {
    "a.bin": b"alpha",
    "b/c.bin": b"same bytes",
    "b/d.bin": b"same bytes",
    "b-e.bin": b"echo",
    "é/ü 1.txt": b"unicode",
    "f+g&h=i.txt": b"reserved",
    "z.bin": b"zulu",
}


@pytest.fixture(autouse=True)
def pages_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_store, "ARTIFACT_PAGE", 2)
    monkeypatch.setattr(push, "MISSING_PAGE", 2)
    monkeypatch.setattr(catalog, "DEEP_LIST_PAGE", 2)


async def deploy(client: Any, files: dict[str, bytes], folder: str = "app/1.0") -> None:
    for path, data in files.items():
        resp = await client.put(f"/artifactory/{REPO}/{folder}/{path}", data=data, headers=admin())
        assert resp.status == 201, await resp.text()


def body(
    version: str = "1.0", pattern: str = f"{REPO}/app/1.0/**", *, mappings: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    query: dict[str, Any] = {"pattern": pattern} | ({"mappings": mappings} if mappings else {})
    return {"name": "app", "version": version, "spec": {"queries": [query]}, **extra}


async def staged_rows(client: Any) -> int:
    store = client.app[bundles_key].store
    rows: int = await store._database.run(
        lambda: store._db.execute("SELECT count(*) FROM bundle_staging").fetchone()[0]
    )
    return rows


def targets(answer: dict[str, Any]) -> list[str]:
    return [a["targetRepoPath"] for a in answer["artifacts"]]


EXPECTED = sorted(f"{REPO}/app/1.0/{p}" for p in FILES)


async def test_pages_make_the_same_bundle_answered_signed_and_pushed_whole(dist: Any, edge_server: EdgeProcess) -> None:
    await deploy(dist, FILES)
    created = await dist.post(f"{V1}/release_bundle", json=body(sign_immediately=True), headers=admin())
    assert created.status == 201, await created.text()
    answer = await created.json()
    assert (created.content_type, created.charset) == ("application/json", "utf-8")
    assert targets(answer) == EXPECTED and answer["artifacts_count"] == len(FILES)
    got = await (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).json()
    assert got == answer
    manifest = await (await dist.get(f"{V1}/release_bundle/app/1.0/manifest", headers=admin())).read()
    assert created.headers["X-Checksum-Sha256"] == hashlib.sha256(manifest).hexdigest()
    assert [a.target for a in decode(manifest).artifacts] == EXPECTED
    assert await staged_rows(dist) == 0

    await trusted_edge(dist, edge_server)
    done = await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    assert done["status"] == COMPLETED, done
    (site,) = done["sites"]
    total = sum(map(len, FILES.values()))
    assert (site["total_files"], site["distributed_files"], site["distributed_bytes"]) == (7, 7, total)
    assert site["sent_files"] == 6  # one blob at two paths goes once
    for path, data in FILES.items():
        assert download(edge_server.url, quote(f"{REPO}/app/1.0/{path}")) == (200, data)

    await deploy(dist, {**FILES, "z.bin": b"zulu 2"}, folder="app/1.1")
    one_new = await dist.post(
        f"{V1}/release_bundle", json=body("1.1", f"{REPO}/app/1.1/**", sign_immediately=True), headers=admin()
    )
    assert one_new.status == 201, await one_new.text()
    done = await wait_for(dist, "1.1", await distribute(dist, "1.1"), finished)
    (site,) = done["sites"]
    assert done["status"] == COMPLETED and (site["distributed_files"], site["sent_files"]) == (7, 1)


async def test_a_dry_run_answers_every_page_and_keeps_nothing(dist: Any) -> None:
    await deploy(dist, FILES)
    dry = await dist.post(f"{V1}/release_bundle", json=body(dry_run=True), headers=admin())
    assert dry.status == 200, await dry.text()
    assert targets(await dry.json()) == EXPECTED
    assert (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).status == 404
    assert await staged_rows(dist) == 0


async def test_an_update_over_pages_replaces_the_content_whole(dist: Any) -> None:
    await deploy(dist, FILES)
    assert (await dist.post(f"{V1}/release_bundle", json=body(), headers=admin())).status == 201
    narrower = body(pattern=f"{REPO}/app/1.0/b/*")
    updated = await dist.put(f"{V1}/release_bundle/app/1.0", json=narrower, headers=admin())
    assert updated.status == 200, await updated.text()
    assert targets(await updated.json()) == [f"{REPO}/app/1.0/b/c.bin", f"{REPO}/app/1.0/b/d.bin"]
    got = await (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).json()
    assert targets(got) == [f"{REPO}/app/1.0/b/c.bin", f"{REPO}/app/1.0/b/d.bin"] and got["artifacts_count"] == 2
    assert await staged_rows(dist) == 0


async def refused_and_nothing_kept(dist: Any, request: dict[str, Any]) -> str:
    refused = await dist.post(f"{V1}/release_bundle", json=request, headers=admin())
    assert refused.status == 400
    assert (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).status == 404
    assert await staged_rows(dist) == 0
    message: str = json.loads(await refused.text())["message"]
    return message


async def test_two_sources_on_different_pages_mapped_to_one_target_are_refused(dist: Any) -> None:
    await deploy(dist, FILES)
    flat = body(mappings=[{"input": f"{REPO}/app/1.0/(.*)", "output": f"{REPO}/flat/one.bin"}])
    assert "would hold both" in await refused_and_nothing_kept(dist, flat)


async def test_a_file_and_a_folder_at_one_target_on_different_pages_are_refused(dist: Any) -> None:
    await deploy(dist, FILES)
    mapped = {"a.bin": "t/a", "b-e.bin": "t/a-x", "z.bin": "t/a/z"}  # 't/a-x' sorts between the two
    queries = [
        {"pattern": f"{REPO}/app/1.0/{source}", "mappings": [{"input": ".*", "output": f"{REPO}/{target}"}]}
        for source, target in mapped.items()
    ]
    nested = {"name": "app", "version": "1.0", "spec": {"queries": queries}}
    assert "collide at target path 'releases-local/t/a/z'" in await refused_and_nothing_kept(dist, nested)


async def test_stale_staging_of_a_crashed_create_is_cleared_by_the_next(dist: Any, tmp_path: Path) -> None:
    await deploy(dist, FILES)
    store = dist.app[bundles_key].store
    await store.stage("left-by-a-crash", [bundle_store.BundleArtifact("r/x", "r/x", "0" * 64, "0" * 40, "0" * 32, 1)])
    await store._database.run(lambda: store._db.execute("UPDATE bundle_staging SET staged_at = 0"))
    assert (await dist.post(f"{V1}/release_bundle", json=body(), headers=admin())).status == 201
    assert await staged_rows(dist) == 0
