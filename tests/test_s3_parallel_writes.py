"""The S3 backend's parallel writes: a batch of small blobs, and a verified file in parts, each
request straight to the blob's final key, at most ``write_concurrency`` in flight.

Against a real SeaweedFS behind the fault proxy of tests/fault_servers.py, which counts the
calls it forwards and holds each for a moment, so that calls made at once are seen at once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from edge.settings import load_edge_settings
from repository.settings import SettingsError
from storage_backends import MAX_WRITE_CONCURRENCY, DigestMismatch, StorageError, create_backend
from tests.fault_servers import S3Fault, S3Faults
from tests.test_s3_faults import PART, assert_absent, contents, opened, read_all
from tests.test_s3_faults import bucket as bucket  # noqa: F401  (the fixtures: SeaweedFS behind a fault proxy)
from tests.test_s3_faults import faults as faults  # noqa: F401
from tests.test_s3_faults import params as params  # noqa: F401
from tests.test_s3_faults import prefix as prefix  # noqa: F401
from tests.test_s3_faults import proxy as proxy  # noqa: F401

CONCURRENCY = 4
HOLD = 0.5  # seconds the proxy holds each counted call


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_keys(params: dict[str, Any], blobs: list[bytes]) -> list[str]:
    return sorted(f"{params['prefix']}blobs/{s[:2]}/{s[2:4]}/{s}" for s in map(sha256, blobs))


@pytest.mark.parametrize("count", [0, 1, CONCURRENCY - 1, CONCURRENCY, CONCURRENCY + 1])
async def test_a_batch_is_stored_blob_by_blob_at_most_write_concurrency_puts_at_once_without_a_head(
    params: dict[str, Any], faults: S3Faults, bucket: Any, count: int
) -> None:
    faults.delays["PutObject"] = HOLD
    blobs = [os.urandom(1000 + i) for i in range(count)]
    async with opened(params, write_concurrency=CONCURRENCY) as store:
        await store.write_many([(sha256(b), [b[:100], b[100:]]) for b in blobs])
        for data in blobs:
            assert await read_all(store, sha256(data)) == data
    assert faults.calls("PutObject") == [200] * count
    assert faults.most_in_flight["PutObject"] == min(count, CONCURRENCY)
    assert faults.calls("HeadObject") == [], "the caller stores only what it lacks: nothing is asked first"
    assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": blob_keys(params, blobs), "uploads": []}


async def test_a_put_s3_keeps_failing_fails_the_batch_and_leaves_no_key_for_that_blob(
    params: dict[str, Any], faults: S3Faults, bucket: Any
) -> None:
    blobs = [os.urandom(2000 + i) for i in range(2 * CONCURRENCY + 1)]
    failing = sha256(blobs[CONCURRENCY])
    faults.add(S3Fault("PutObject", 500, times=0, key_suffix=failing))
    batch = [(sha256(b), [b]) for b in blobs]
    async with opened(params, write_concurrency=CONCURRENCY) as store:
        with pytest.raises(StorageError) as failed:
            await store.write_many(batch)
        assert not isinstance(failed.value, DigestMismatch) and "InternalError" in str(failed.value)
        assert not await store.exists(failing)
        stored = [b for b in blobs if await store.exists(sha256(b))]
        for data in stored:  # whatever else was stored is whole
            assert await read_all(store, sha256(data)) == data
        assert contents(bucket, params["bucket"], params["prefix"]) == {
            "objects": blob_keys(params, stored),
            "uploads": [],
        }
        faults.clear()
        await store.write_many(batch)  # the same batch again, once S3 is back
        for data in blobs:
            assert await read_all(store, sha256(data)) == data


async def test_a_file_of_many_parts_goes_straight_to_its_key_parts_in_parallel_and_leaves_its_place(
    params: dict[str, Any], faults: S3Faults, bucket: Any, tmp_path: Path
) -> None:
    data = os.urandom(PART * (CONCURRENCY + 1) + 1234)  # one part more than go at once, and a short one
    staged = tmp_path / "staged.part"
    staged.write_bytes(data)
    faults.delays["UploadPart"] = HOLD
    async with opened(params, write_concurrency=CONCURRENCY) as store:
        assert await store.adopt(staged, sha256(data), len(data))
        assert not staged.exists()
        assert await read_all(store, sha256(data)) == data
        assert faults.calls("CopyObject") == [] and faults.calls("HeadObject") == [], "no copy, no HEAD"
        assert (await store.stat(sha256(data))).size == len(data)
    assert faults.calls("UploadPart") == [200] * (CONCURRENCY + 2)
    assert faults.most_in_flight["UploadPart"] == CONCURRENCY
    assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": blob_keys(params, [data]), "uploads": []}


@pytest.mark.parametrize(
    ("operation", "after"),
    [("CreateMultipartUpload", 0), ("UploadPart", 0), ("UploadPart", CONCURRENCY), ("CompleteMultipartUpload", 0)],
)
async def test_a_file_s3_keeps_failing_raises_leaves_nothing_in_the_bucket_and_the_file_in_its_place(
    params: dict[str, Any], faults: S3Faults, bucket: Any, tmp_path: Path, operation: str, after: int
) -> None:
    data = os.urandom(PART * (CONCURRENCY + 1) + 1)
    staged = tmp_path / "staged.part"
    staged.write_bytes(data)
    faults.add(S3Fault(operation, 503, times=0, after=after))
    async with opened(params, write_concurrency=CONCURRENCY) as store:
        with pytest.raises(StorageError) as failed:
            await store.adopt(staged, sha256(data), len(data))
        assert "SlowDown" in str(failed.value)
        assert staged.read_bytes() == data, "the caller keeps its file, to try again"
        await assert_absent(store, data)
        assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": [], "uploads": []}
        faults.clear()
        assert await store.adopt(staged, sha256(data), len(data))
        assert await read_all(store, sha256(data)) == data


async def test_an_upload_of_a_file_that_could_not_be_aborted_is_invisible_and_swept_by_open_once_stale(
    params: dict[str, Any], faults: S3Faults, bucket: Any, tmp_path: Path
) -> None:
    data = os.urandom(PART + 1)
    staged = tmp_path / "staged.part"
    staged.write_bytes(data)
    faults.add(S3Fault("CompleteMultipartUpload", 500, times=0), S3Fault("AbortMultipartUpload", 500, times=0))
    async with opened(params) as store:
        with pytest.raises(StorageError):
            await store.adopt(staged, sha256(data), len(data))
        await assert_absent(store, data)
    faults.clear()
    left = contents(bucket, params["bucket"], params["prefix"])
    assert left["objects"] == [] and [key for key, _ in left["uploads"]] == blob_keys(params, [data])
    async with opened(params) as store:  # another process's upload may still be running: kept
        await assert_absent(store, data)
    assert contents(bucket, params["bucket"], params["prefix"]) == left
    async with opened(params, stale_upload_seconds=0) as store:
        await assert_absent(store, data)
    assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": [], "uploads": []}


@pytest.mark.parametrize("value", [1, MAX_WRITE_CONCURRENCY - 1, MAX_WRITE_CONCURRENCY])
async def test_a_write_concurrency_of_1_to_64_is_taken_from_the_settings(params: dict[str, Any], value: int) -> None:
    env = {"EDGE_STORAGE_BACKEND": "s3", "EDGE_STORAGE_BUCKET": "b", "EDGE_STORAGE_WRITE_CONCURRENCY": str(value)}
    assert load_edge_settings(env=env).storage.write_concurrency == value
    async with opened(params, write_concurrency=value) as store:
        blob = os.urandom(100)
        await store.write_many([(sha256(blob), [blob])])
        assert await read_all(store, sha256(blob)) == blob


@pytest.mark.parametrize("value", [0, MAX_WRITE_CONCURRENCY + 1])
def test_a_write_concurrency_outside_1_to_64_is_refused(params: dict[str, Any], value: int) -> None:
    env = {"EDGE_STORAGE_BACKEND": "s3", "EDGE_STORAGE_BUCKET": "b", "EDGE_STORAGE_WRITE_CONCURRENCY": str(value)}
    with pytest.raises(SettingsError, match=r"setting 'storage\.write_concurrency' must be 1 to 64"):
        load_edge_settings(env=env)
    with pytest.raises(ValueError, match="write_concurrency must be 1 to 64"):
        create_backend("s3", {**params, "write_concurrency": value})
