"""The SBOM a signed manifest names, on an edge: asked for as one more blob of the transaction,
checked like any blob, waited for by the commit, served with the bundle, kept while the bundle
is there and collected after it is removed; a manifest without one still distributes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from repository.http import keys as core
from tests.conftest import error_of
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import (
    BUNDLES,
    FILES,
    TX,
    commit,
    manifest_of,
    put_blob,
    sha256,
    signed,
    start,
    token,
)
from tests.test_edge_transactions import dist as dist  # noqa: F401  (the fixture)
from tests.test_edge_transactions import edge_settings as edge_settings  # noqa: F401  (sqlite, then PostgreSQL)
from wire.manifest import Manifest, ManifestSbom

SBOM = b'{"bomFormat":"CycloneDX","specVersion":"1.6","version":1}'
SBOM_URL = "/artifactory/api/distribution/release_bundle/app/1.0.0/sbom"


def with_sbom(manifest: Manifest, data: bytes = SBOM) -> Manifest:
    return Manifest.create(
        manifest.name, manifest.version, manifest.artifacts, created=manifest.created,
        created_by=manifest.created_by, sbom=ManifestSbom(sha256(data), len(data)),
    )  # fmt: skip


async def upload_files(edge: Any, tid: str, headers: dict[str, str]) -> None:
    for data in FILES.values():
        resp = await put_blob(edge, tid, data, headers)
        assert resp.status in (200, 201), await resp.text()


async def started_with_files(edge: Any, headers: dict[str, str], keys: KeySet, key_factory: KeyFactory) -> str:
    """A transaction of a manifest naming ``SBOM``, every file uploaded but not the SBOM: its id."""
    started = await start(edge, signed(key_factory, keys.alice, with_sbom(manifest_of(FILES))), headers)
    assert sorted(started["missing"]) == sorted({sha256(SBOM), *(sha256(d) for d in FILES.values())})
    await upload_files(edge, started["transaction_id"], headers)
    return str(started["transaction_id"])


def storage(edge: Any) -> Any:
    return edge.server.app[core.artifacts].storage


async def test_the_sbom_is_asked_for_received_and_served_with_its_checksum_once_committed(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    tid = await started_with_files(edge, dist, keys, key_factory)
    assert (await put_blob(edge, tid, SBOM, dist)).status == 201
    await commit(edge, tid, dist)
    reader = await token(edge, "reader")
    resp = await edge.get(SBOM_URL, headers=reader)
    assert resp.status == 200, await resp.text()
    assert await resp.read() == SBOM
    assert resp.headers["Content-Type"] == "application/vnd.cyclonedx+json"
    assert resp.headers["X-Checksum-Sha256"] == sha256(SBOM)
    assert (await error_of(await edge.get(SBOM_URL)))[0] == 401  # reader rights: a signed-in role


async def test_a_forged_sbom_upload_is_refused_and_the_commit_waits_for_the_signed_one(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    tid = await started_with_files(edge, dist, keys, key_factory)
    forged = SBOM.replace(b"1.6", b"1.5")
    resp = await edge.put(f"{TX}/{tid}/blobs/{sha256(SBOM)}", data=forged, headers=dist)
    assert (await error_of(resp))[0] == 422
    resp = await edge.post(f"{TX}/{tid}/commit", headers=dist)
    status, message = await error_of(resp)
    assert status == 409 and sha256(SBOM) in message
    assert not await storage(edge).exists(sha256(SBOM))
    assert not await storage(edge).exists(sha256(forged))
    assert await (await edge.get(BUNDLES, headers=dist)).json() == []
    assert await error_of(await edge.get(SBOM_URL, headers=dist)) == (404, "No release bundle app/1.0.0 on this edge")
    assert (await edge.post(f"{TX}/{tid}/abort", headers=dist)).status in (200, 204)
    assert not await storage(edge).exists(sha256(FILES["README.md"]))  # the abort keeps nothing


async def test_an_sbom_whose_upload_claims_another_digest_is_not_accepted_for_the_manifests_sbom(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """Bytes uploaded under their own sha256 are not the SBOM the manifest names: a blob no manifest lists."""
    started = await start(edge, signed(key_factory, keys.alice, with_sbom(manifest_of(FILES))), dist)
    tid = started["transaction_id"]
    other = b'{"bomFormat":"CycloneDX","specVersion":"1.6","version":2}'
    resp = await put_blob(edge, tid, other, dist)
    assert 400 <= resp.status < 500
    await commit(edge, tid, dist, status=409)
    assert not await storage(edge).exists(sha256(other))


async def test_a_manifest_without_an_sbom_still_commits_and_its_sbom_is_a_404(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    assert sorted(started["missing"]) == sorted(sha256(d) for d in FILES.values())
    await upload_files(edge, started["transaction_id"], dist)
    await commit(edge, started["transaction_id"], dist)
    status, message = await error_of(await edge.get(SBOM_URL, headers=dist))
    assert (status, message) == (404, "Release bundle app/1.0.0 has no SBOM (its manifest names none)")


async def test_the_sbom_is_kept_while_the_bundle_is_there_and_collected_after_it_is_removed(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    tid = await started_with_files(edge, dist, keys, key_factory)
    assert (await put_blob(edge, tid, SBOM, dist)).status == 201
    await commit(edge, tid, dist)
    await edge.server.app[core.artifacts].sweep(timedelta(0))  # what nothing references or pins goes
    assert await storage(edge).exists(sha256(SBOM))
    assert (await edge.get(SBOM_URL, headers=dist)).status == 200
    assert (await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 204
    assert not await storage(edge).exists(sha256(SBOM))
    assert (await error_of(await edge.get(SBOM_URL, headers=dist)))[0] == 404


async def test_a_manifest_whose_sbom_digest_is_a_files_with_another_size_is_refused_and_opens_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    readme = FILES["README.md"]
    manifest = with_sbom(manifest_of(FILES), readme)
    lying = Manifest.create(
        manifest.name, manifest.version, manifest.artifacts, created=manifest.created,
        sbom=ManifestSbom(sha256(readme), len(readme) + 1),
    )  # fmt: skip
    resp = await edge.post(TX, json=signed(key_factory, keys.alice, lying), headers=dist)
    status, message = await error_of(resp)
    assert status == 400 and "listed with two sizes" in message
    body = signed(key_factory, keys.alice, manifest)  # the same bytes as a file, the same size: one blob
    started = await start(edge, body, dist)
    assert sorted(started["missing"]) == sorted({sha256(d) for d in FILES.values()})
    await upload_files(edge, started["transaction_id"], dist)
    await commit(edge, started["transaction_id"], dist)
    assert await (await edge.get(SBOM_URL, headers=dist)).read() == readme


async def test_an_sbom_lost_from_the_store_is_a_404_and_the_edge_asks_for_it_again(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    tid = await started_with_files(edge, dist, keys, key_factory)
    assert (await put_blob(edge, tid, SBOM, dist)).status == 201
    await commit(edge, tid, dist)
    await storage(edge).delete(sha256(SBOM))
    assert (await error_of(await edge.get(SBOM_URL, headers=dist)))[0] == 404
    assert (await (await edge.get(f"{TX}/{tid}", headers=dist)).json())["missing"] == [sha256(SBOM)]
    assert (await put_blob(edge, tid, SBOM, dist)).status == 201  # a repair sends it again
    assert await (await edge.get(SBOM_URL, headers=dist)).read() == SBOM
