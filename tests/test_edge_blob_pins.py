"""Garbage collection on an edge never frees a blob that a committed bundle or a transaction in
flight references: not when another bundle sharing it is deleted, not when an upload with the
same bytes is deleted or overwritten, not when another transaction listing it ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from edge.keys import transactions_key
from tests.conftest import UPLOADS, admin, upload
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import (
    BUNDLES,
    FILES,
    REPO,
    TX,
    commit,
    download,
    manifest_of,
    push,
    put_blob,
    sha256,
    signed,
    start,
)
from tests.test_edge_transactions import dist as dist  # noqa: F401  (the fixture)
from tests.test_edge_transactions import edge_settings as edge_settings  # noqa: F401  (on both engines)

SHARED = FILES["README.md"]


async def stored(edge: Any, data: bytes) -> bool:
    """Whether the edge's blob store holds these bytes."""
    return await edge.server.app[transactions_key].artifacts.storage.exists(sha256(data))


async def collect(edge: Any, data: bytes) -> None:
    """A garbage collection pass over these bytes: freed unless something references or pins them."""
    await edge.server.app[transactions_key].artifacts.collect([sha256(data)])


async def finish(edge: Any, started: dict[str, Any], dist: dict[str, str], files: dict[str, bytes]) -> None:
    """Upload what the start said was missing, commit, and check every file is served."""
    by_sha = {sha256(d): d for d in files.values()}
    for missing in started["missing"]:
        assert (await put_blob(edge, started["transaction_id"], by_sha[missing], dist)).status == 201
    assert (await commit(edge, started["transaction_id"], dist))["state"] == "COMMITTED"
    for path, data in files.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{path}") == (200, data)


@pytest.mark.parametrize("how", ["delete", "overwrite", "delete-folder"])
async def test_a_blob_a_transaction_found_held_survives_the_upload_that_held_it(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, how: str
) -> None:
    await upload(edge, "mine/README.md", SHARED)
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    assert sha256(SHARED) not in started["missing"]  # held: the service will not send it
    if how == "overwrite":
        await upload(edge, "mine/README.md", b"something else")
    else:
        path = "mine/README.md" if how == "delete" else "mine"
        assert (await edge.delete(f"/artifactory/{UPLOADS}/{path}", headers=admin())).status == 204
    await collect(edge, SHARED)
    assert await stored(edge, SHARED)
    await finish(edge, started, dist, FILES)


async def test_a_blob_a_transaction_received_survives_an_upload_of_the_same_bytes_being_deleted(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    assert (await put_blob(edge, started["transaction_id"], SHARED, dist)).status == 201
    await upload(edge, "mine/README.md", SHARED)
    assert (await edge.delete(f"/artifactory/{UPLOADS}/mine/README.md", headers=admin())).status == 204
    await collect(edge, SHARED)
    assert await stored(edge, SHARED)
    await finish(edge, {**started, "missing": [sha256(d) for d in FILES.values() if d != SHARED]}, dist, FILES)


async def test_a_blob_survives_the_abort_of_another_transaction_that_listed_it_while_one_is_in_flight(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    first = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    for data in FILES.values():
        assert (await put_blob(edge, first["transaction_id"], data, dist)).status == 201
    second = await start(edge, signed(key_factory, keys.alice, manifest_of({"README.md": SHARED}, name="other")), dist)
    assert second["missing"] == []
    assert (await edge.post(f"{TX}/{second['transaction_id']}/abort", headers=dist)).status == 200
    await collect(edge, SHARED)
    assert await stored(edge, SHARED)
    await finish(edge, {**first, "missing": []}, dist, FILES)


async def test_a_committed_bundle_keeps_its_blobs_when_another_bundle_sharing_them_is_deleted(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    await push(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist, FILES)
    twin = manifest_of({"README.md": SHARED}, name="twin", version="1")
    await push(edge, signed(key_factory, keys.alice, twin), dist, {"README.md": SHARED})
    await upload(edge, "mine/README.md", SHARED)
    assert (await edge.delete(f"{BUNDLES}/twin/1", headers=dist)).status == 204
    assert (await edge.delete(f"/artifactory/{UPLOADS}/mine/README.md", headers=admin())).status == 204
    await collect(edge, SHARED)
    assert await stored(edge, SHARED)
    assert await download(edge, f"{REPO}/app/1.0.0/README.md") == (200, SHARED)
    assert (await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 204
    assert not await stored(edge, SHARED)  # nothing holds it any more: collected


async def test_an_overwritten_upload_frees_its_old_bytes_unless_something_else_holds_them(edge: Any) -> None:
    await upload(edge, "a.bin", b"first bytes")
    await upload(edge, "a.bin", b"second bytes")
    assert not await stored(edge, b"first bytes")
    await upload(edge, "b.bin", b"second bytes")
    await upload(edge, "a.bin", b"third bytes")
    assert await stored(edge, b"second bytes")
    assert await download(edge, f"{UPLOADS}/b.bin") == (200, b"second bytes")


async def test_the_sweep_of_unreferenced_blobs_keeps_what_a_transaction_in_flight_received(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    assert (await put_blob(edge, started["transaction_id"], SHARED, dist)).status == 201
    assert await edge.server.app[transactions_key].artifacts.sweep(grace=timedelta(0)) == 0
    assert await stored(edge, SHARED)
    await finish(edge, {**started, "missing": [sha256(d) for d in FILES.values() if d != SHARED]}, dist, FILES)
