"""An S3 edge's garbage collection deletes blobs with DeleteObjects, a thousand keys a request,
against a real S3 server (SeaweedFS) behind a proxy that counts and breaks chosen calls.

What an operator relies on: the blobs asked for go and nothing else does, in one request per
thousand keys (not a HEAD and a DELETE per blob); a key S3 could not delete is named to the
caller, never taken for deleted, and the next collect deletes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import create_app
from storage_backends import BlobsNotDeleted, StorageBackend
from tests.conftest import UPLOADS, admin, make_settings
from tests.fault_servers import S3Fault, S3Faults
from tests.test_s3_faults import MAX_ATTEMPTS, contents, opened
from tests.test_s3_faults import bucket as bucket  # noqa: F401  (fixtures)
from tests.test_s3_faults import faults as faults  # noqa: F401
from tests.test_s3_faults import params as params  # noqa: F401
from tests.test_s3_faults import prefix as prefix  # noqa: F401
from tests.test_s3_faults import proxy as proxy  # noqa: F401

BATCH = 1000
DIRECT_CALLS = ("DeleteObject", "HeadObject")


@pytest.fixture
async def store(params: dict[str, Any]) -> AsyncIterator[StorageBackend]:
    async with opened(params) as backend:
        yield backend


async def stored_blobs(store: StorageBackend, count: int) -> list[str]:
    """``count`` small blobs stored at once; their sha256s."""
    blobs = [os.urandom(16) + i.to_bytes(4, "big") for i in range(count)]
    named = [(hashlib.sha256(b).hexdigest(), [b]) for b in blobs]
    await store.write_many(named)
    return [sha for sha, _ in named]


async def listed(store: StorageBackend) -> set[str]:
    return {sha async for sha in store.list()}


@pytest.mark.parametrize("count", [0, 1, BATCH - 1, BATCH, BATCH + 1])
async def test_delete_many_removes_exactly_those_blobs_a_thousand_keys_a_request(
    store: StorageBackend, faults: S3Faults, count: int
) -> None:
    kept = await stored_blobs(store, 2)
    doomed = await stored_blobs(store, count)
    faults.seen.clear()
    await store.delete_many(doomed)
    assert await listed(store) == set(kept)
    assert faults.calls("DeleteObjects") == [200] * -(-count // BATCH)
    assert [op for op, _ in faults.seen if op in DIRECT_CALLS] == []
    await store.delete_many(kept)


async def test_delete_many_skips_blobs_that_are_not_there(store: StorageBackend) -> None:
    kept, there = await stored_blobs(store, 1), await stored_blobs(store, 1)
    never = ["0" * 64, "f" * 64]
    await store.delete_many([*never, *there, *never[:1]])
    assert await listed(store) == set(kept)
    await store.delete_many(kept)


async def test_a_request_that_fails_for_good_names_its_keys_and_the_other_batches_still_go(
    store: StorageBackend, faults: S3Faults
) -> None:
    blobs = await stored_blobs(store, BATCH + 1)
    faults.add(S3Fault("DeleteObjects", status=500, after=1, times=MAX_ATTEMPTS))  # the second request
    with pytest.raises(BlobsNotDeleted) as raised:
        await store.delete_many(blobs)
    left = raised.value.sha256s
    assert left == [blobs[BATCH]]
    assert await listed(store) == set(left), "the first thousand are gone, the one the failed request carried is not"
    faults.clear()
    await store.delete_many(left)
    assert await listed(store) == set()


async def test_keys_s3_reports_it_could_not_delete_are_named_and_only_those(
    store: StorageBackend, faults: S3Faults
) -> None:
    blobs = await stored_blobs(store, 40)
    refused = blobs[7]
    faults.add(S3Fault("DeleteObjects", refuse_keys_ending=refused))
    with pytest.raises(BlobsNotDeleted) as raised:
        await store.delete_many(blobs)
    assert raised.value.sha256s == [refused]
    assert "AccessDenied" in str(raised.value)


async def test_a_blob_whose_delete_failed_is_deleted_by_the_next_collect(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], faults: S3Faults, bucket: Any, prefix: str
) -> None:
    storage = {"backend": "s3", **params}
    edge = await aiohttp_client(create_app(make_settings(tmp_path, storage=storage)))
    for name in ("first.bin", "second.bin"):
        resp = await edge.put(f"/artifactory/{UPLOADS}/{name}", data=os.urandom(100), headers=admin())
        assert resp.status == 201, await resp.text()
    blobs = lambda: [k for k in contents(bucket, params["bucket"], prefix)["objects"] if "/blobs/" in k]  # noqa: E731
    assert len(blobs()) == 2
    faults.add(S3Fault("DeleteObjects", status=503, times=0))
    assert (await edge.delete(f"/artifactory/{UPLOADS}/first.bin", headers=admin())).status == 204
    assert len(blobs()) == 2, "S3 failed every try: the blob is still there"
    failed = faults.calls("DeleteObjects")
    faults.faults.clear()
    assert (await edge.delete(f"/artifactory/{UPLOADS}/second.bin", headers=admin())).status == 204
    assert blobs() == [], "the next collect deleted it too"
    assert failed and set(failed) == {503}
    assert faults.calls("DeleteObjects") == [*failed, 200], "one request for both"
