"""Bundle content stays bundle content on an edge: no bundle lands in the uploads repo, and
no direct upload (PUT, checksum deploy, DELETE) changes a file a committed bundle owns, in
any repo. Each refusal changes nothing, and the file still serves the bundle's bytes."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from edge.store import bundle_owner
from repository.catalog import Repo
from repository.http import keys as core
from tests.conftest import UPLOADS, admin, error_of, upload
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_deploy import snapshot
from tests.test_edge_transactions import (
    FILES,
    REPO,
    TX,
    download,
    manifest_of,
    push,
    sha256,
    signed,
    staging_of,
    tx_id,
)
from tests.test_edge_transactions import dist as dist  # noqa: F401  (the fixture)
from wire.manifest import Manifest

BUNDLE_BYTES = b"the bundle's own bytes\n"
OTHER_BYTES = b"bytes a deployer would like to see there instead\n"


@pytest.mark.parametrize(
    "uploads_only",
    [pytest.param(True, id="only-uploads"), pytest.param(False, id="one-of-two")],
)
async def test_a_bundle_with_a_target_in_the_uploads_repo_is_refused_at_start_with_422_and_stages_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, uploads_only: bool
) -> None:
    into_uploads = manifest_of({"README.md": BUNDLE_BYTES}, repo=UPLOADS).artifacts
    elsewhere = () if uploads_only else manifest_of({"a.bin": b"a"}).artifacts
    body = signed(key_factory, keys.alice, Manifest.create("app", "1.0.0", [*elsewhere, *into_uploads]))
    before = await snapshot(edge)
    resp = await edge.post(TX, json=body, headers=dist)
    status, message = await error_of(resp)
    assert status == 422
    assert f"{UPLOADS}/app/1.0.0/README.md" in message and "uploads" in message
    assert (await edge.get(f"{TX}/{tx_id(body)}", headers=dist)).status == 404
    assert not staging_of(edge, tx_id(body)).exists()
    assert await snapshot(edge) == before
    for artifact in [*elsewhere, *into_uploads]:
        assert (await download(edge, artifact.target))[0] == 404


async def received_into_uploads(edge: Any) -> str:
    """A committed bundle that owns ``uploads/app/README.md``, as an edge holds one that received
    it before such bundles were refused; answers the owner."""
    owner = bundle_owner("legacy", "1.0")
    catalog = edge.app[core.catalog]
    await upload(edge, "scratch.bin", BUNDLE_BYTES)  # the blob, stored
    entry = replace(await catalog.get_artifact(UPLOADS, "scratch.bin"), path="app/README.md", owner=owner)
    await edge.app[core.catalog].publish([entry], [Repo(UPLOADS)])
    assert (await edge.delete(f"/artifactory/{UPLOADS}/scratch.bin", headers=admin())).status == 204
    assert await download(edge, f"{UPLOADS}/app/README.md") == (200, BUNDLE_BYTES)
    return owner


DEPLOY = {"X-Checksum-Deploy": "true"}
WRITES = [
    pytest.param("PUT", "app/README.md", {}, OTHER_BYTES, id="put"),
    pytest.param("PUT", "app/README.md", {"X-Checksum-Sha256": "sha256"}, OTHER_BYTES, id="put-checked"),
    pytest.param("PUT", "app/README.md", {**DEPLOY, "X-Checksum-Sha256": "sha256"}, None, id="deploy-sha256"),
    pytest.param("PUT", "app/README.md", {**DEPLOY, "X-Checksum": "sha256"}, None, id="deploy-bare"),
    pytest.param("PUT", "app/README.md", {**DEPLOY, "X-Checksum-Sha1": "sha1"}, None, id="deploy-sha1"),
    pytest.param("DELETE", "app/README.md", {}, None, id="delete-file"),
    pytest.param("DELETE", "app", {}, None, id="delete-folder"),
]


@pytest.mark.parametrize(("method", "path", "headers", "data"), WRITES)
async def test_a_direct_upload_never_changes_a_file_a_committed_bundle_owns(
    edge: Any, method: str, path: str, headers: dict[str, str], data: bytes | None
) -> None:
    owner = await received_into_uploads(edge)
    await upload(edge, "elsewhere/other.bin", OTHER_BYTES)  # so a checksum deploy finds those bytes
    await upload(edge, "app/own.txt", b"an upload beside the bundle's file")
    digests = {"sha256": sha256(OTHER_BYTES), "sha1": hashlib.sha1(OTHER_BYTES).hexdigest()}
    sent = {k: digests.get(v, v) for k, v in headers.items()}
    before = await snapshot(edge)
    resp = await edge.request(method, f"/artifactory/{UPLOADS}/{path}", data=data, headers={**admin(), **sent})
    status, message = await error_of(resp)
    assert status == 409
    assert f"{UPLOADS}/app/README.md" in message and owner in message
    assert await snapshot(edge) == before
    assert await download(edge, f"{UPLOADS}/app/README.md") == (200, BUNDLE_BYTES)
    assert await download(edge, f"{UPLOADS}/app/own.txt") == (200, b"an upload beside the bundle's file")


async def test_the_files_an_upload_owns_beside_a_bundles_file_stay_its_own_to_change(edge: Any) -> None:
    await received_into_uploads(edge)
    await upload(edge, "app/own.txt", b"one")
    await upload(edge, "app/own.txt", b"two")
    assert (await edge.delete(f"/artifactory/{UPLOADS}/app/own.txt", headers=admin())).status == 204
    assert await download(edge, f"{UPLOADS}/app/README.md") == (200, BUNDLE_BYTES)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_in_a_bundles_own_repo_every_direct_write_is_a_403_and_the_bundle_is_served(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, method: str
) -> None:
    await push(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist, FILES)
    before = await snapshot(edge)
    for headers in ({}, {"X-Checksum-Deploy": "true", "X-Checksum-Sha256": sha256(FILES["README.md"])}):
        resp = await edge.request(
            method, f"/artifactory/{REPO}/app/1.0.0/README.md", data=b"x", headers={**admin(), **headers}
        )
        assert (await error_of(resp))[0] == 403
    assert await snapshot(edge) == before
    for path, data in FILES.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{path}") == (200, data)
