"""A bundle version is immutable, its bytes too: every stored bundle version (OPEN or SIGNED) pins
the blobs it lists on the Distribution service, so deleting or overwriting a source path changes
nothing about it, and deleting the bundle version frees the blobs nothing else holds. A bundle
never targets an edge's uploads repo, and a spec selects only what its creator may read."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import SOURCE_REPO, EdgeProcess
from distribution.bundles import parse_bundle_request
from distribution.keys import bundles_key
from distribution.matching import SpecError
from repository.catalog import Repo
from repository.http import keys as core
from repository.permissions import Action, Permissions, PermissionTarget
from repository.tokens import Principal, Role
from tests.conftest import UPLOADS, admin
from tests.edge_setup import distributor_token, download, trust
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, public_key, running_service
from tests.test_distribution_api import REPO, create_body, deploy, flat_error
from tests.test_distribution_api import dist as dist  # noqa: F401  (the fixture)

FILES = {"app/1.4.0/a.bin": b"bytes of a\n", "app/1.4.0/b.bin": b"bytes of b\n"}
A, B = (hashlib.sha256(FILES[p]).hexdigest() for p in sorted(FILES))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stored(client: Any, sha: str) -> bool:
    return bool(await client.app[core.storage].exists(sha))


async def with_files(client: Any) -> None:
    for path, data in FILES.items():
        await deploy(client, path, data)


async def bundle_state(client: Any) -> tuple[int, Any]:
    resp = await client.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())
    return resp.status, await resp.json()


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "open"])
async def test_a_bundle_keeps_its_bytes_when_its_sources_are_deleted_or_overwritten(dist: Any, signed: bool) -> None:
    await with_files(dist)
    made = await dist.post(f"{V1}/release_bundle", json=create_body(sign_immediately=signed), headers=admin())
    assert made.status == 201, await made.text()
    assert (await dist.delete(f"/artifactory/{REPO}/app/1.4.0/a.bin", headers=admin())).status == 204
    await deploy(dist, "app/1.4.0/b.bin", b"new bytes of b\n")
    assert await stored(dist, A) and await stored(dist, B)
    if not signed:  # signing still names, and so promises, the bytes the bundle was made of
        assert (await dist.post(f"{V1}/release_bundle/app/1.4.0/sign", headers=admin())).status == 200
    manifest = await (await dist.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())).json()
    assert sorted(a["sha256"] for a in manifest["artifacts"]) == sorted([A, B])
    assert (await dist.delete(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 204
    assert not await stored(dist, A) and not await stored(dist, B)  # nothing else held them: freed
    assert await stored(dist, sha256(b"new bytes of b\n"))


async def test_deleting_a_bundle_frees_only_the_blobs_nothing_else_holds(dist: Any) -> None:
    await with_files(dist)
    for version in ("1.4.0", "1.4.1"):
        body = create_body(version=version, pattern=f"{REPO}/app/1.4.0/*")
        assert (await dist.post(f"{V1}/release_bundle", json=body, headers=admin())).status == 201
    assert (await dist.delete(f"/artifactory/{REPO}/app/1.4.0/a.bin", headers=admin())).status == 204
    assert (await dist.delete(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 204
    assert await stored(dist, A) and await stored(dist, B)  # 1.4.1 holds a, the source path holds b
    assert (await dist.delete(f"{V1}/release_bundle/app/1.4.1", headers=admin())).status == 204
    assert not await stored(dist, A) and await stored(dist, B)


async def test_updating_an_open_bundle_frees_the_blobs_only_its_old_content_held(dist: Any) -> None:
    await with_files(dist)
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    assert (await dist.delete(f"/artifactory/{REPO}/app/1.4.0/a.bin", headers=admin())).status == 204
    assert await stored(dist, A)
    update = create_body(pattern=f"{REPO}/app/1.4.0/b.bin")
    assert (await dist.put(f"{V1}/release_bundle/app/1.4.0", json=update, headers=admin())).status == 200
    assert not await stored(dist, A) and await stored(dist, B)


async def test_a_source_deleted_while_the_bundle_is_resolved_is_a_409_and_nothing_is_stored(
    dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await with_files(dist)
    service = dist.app[bundles_key]
    resolve = service.resolve

    async def resolve_then_delete(*args: Any) -> Any:
        found = await resolve(*args)
        await dist.app[core.artifacts].delete(REPO, "app/1.4.0/a.bin")  # a delete that runs meanwhile
        return found

    monkeypatch.setattr(service, "resolve", resolve_then_delete)
    status, message = await flat_error(await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin()))
    assert status == 409 and A in message
    assert (await bundle_state(dist))[0] == 404
    assert not await stored(dist, A)


MAPPED = {"mappings": [{"input": f"{REPO}/(.*)", "output": f"{UPLOADS}/$1"}]}


@pytest.mark.parametrize("how", ["create", "dry-run", "update", "unmapped"])
async def test_a_spec_targeting_the_edge_uploads_repo_is_a_400_naming_the_path_and_stores_nothing(
    dist: Any, how: str
) -> None:
    await with_files(dist)
    body = create_body()
    body["spec"]["queries"][0] |= MAPPED
    if how == "unmapped":  # a source repo with that name, selected as it is
        made = await dist.put(f"/artifactory/api/repositories/{UPLOADS}", json={"rclass": "local"}, headers=admin())
        assert made.status == 200
        await deploy(dist, "app/1.4.0/a.bin", FILES["app/1.4.0/a.bin"], repo=UPLOADS)
        body = create_body(pattern=f"{UPLOADS}/app/1.4.0/*")
    if how == "update":
        assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    before = await bundle_state(dist)
    if how == "update":
        resp = await dist.put(f"{V1}/release_bundle/app/1.4.0", json=body, headers=admin())
    else:
        resp = await dist.post(f"{V1}/release_bundle", json=body | {"dry_run": how == "dry-run"}, headers=admin())
    status, message = await flat_error(resp)
    assert status == 400
    assert f"'{UPLOADS}/app/1.4.0/a.bin'" in message and "uploads" in message
    assert await bundle_state(dist) == before
    listed = await (await dist.get(f"{V1}/release_bundle", headers=admin())).json()
    assert len(listed) == (1 if how == "update" else 0)


async def test_a_spec_selects_only_what_its_creator_may_read_and_unreadable_is_like_missing(dist: Any) -> None:
    await with_files(dist)
    await deploy(dist, "app/1.4.0/secret/key.bin", b"secret")
    secret = PermissionTarget("secret", (REPO,), ("app/1.4.0/secret/**",), users={"alice": frozenset({Action.read})})
    permissions = Permissions([secret])
    carol = Principal("carol", Role.reader)

    def readable(repo: Repo, path: str) -> bool:
        return permissions.decide(carol, Action.read, repo, path).allowed

    service = dist.app[bundles_key]
    every = parse_bundle_request(create_body(pattern=f"{REPO}/app/1.4.0/**", dry_run=True))
    answer = await service.create(every, "carol", readable)
    assert answer.staged is not None
    artifacts = [a async for page in service.store.staged_pages(answer.staged) for a in page]
    await service.discard(answer)
    assert [a.source for a in artifacts] == [f"{REPO}/{p}" for p in sorted(FILES)]
    errors = []
    for pattern in (f"{REPO}/app/1.4.0/secret/*", f"{REPO}/app/1.4.0/nothing/*"):
        with pytest.raises(SpecError) as refused:
            await service.create(parse_bundle_request(create_body(pattern=pattern, dry_run=True)), "carol", readable)
        errors.append((refused.value.status, refused.value.message))
    assert errors[0] == errors[1] == (400, "spec matches no artifacts")


# -- end to end: the service and an edge as real processes ------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


def blob_files(service: Service) -> set[str]:
    return {p.name for p in (service.process.data_dir / "blobs").rglob("*") if p.is_file()}


def test_a_signed_bundle_whose_sources_were_deleted_and_overwritten_still_distributes_its_own_bytes(
    service: Service, tmp_path: Path
) -> None:
    files = {"app.bin": os.urandom(2 * 1024 * 1024), "notes.txt": b"release notes\n"}
    service.signed_bundle("1.0.0", files)
    delete = urllib.request.Request(
        f"{service.process.url}/artifactory/{SOURCE_REPO}/app/1.0.0/app.bin", method="DELETE"
    )
    delete.add_header("Authorization", f"Bearer {service.process.admin_token}")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(delete, timeout=60) as resp:
        assert resp.status == 204
    service.put_file("app/1.0.0/notes.txt", b"other notes\n")
    with EdgeProcess(tmp_path / "edge") as edge:
        trust(edge, public_key(service))
        service.add_edge("edge-1", edge.url, distributor_token(edge))
        done = service.wait("1.0.0", service.distribute("1.0.0"))
        assert done["status"] == "Completed", done
        for name, data in files.items():
            assert download(edge.url, f"{SOURCE_REPO}/app/1.0.0/{name}") == (200, data)
    originals = {sha256(d) for d in files.values()}
    assert originals <= blob_files(service)
    assert service.call("DELETE", f"{V1}/release_bundle/app/1.0.0")[0] == 204
    assert not originals & blob_files(service)
    assert sha256(b"other notes\n") in blob_files(service)
