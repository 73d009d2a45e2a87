"""The S3 backend when S3 misbehaves: 500/503 answers, time-outs, uploads left incomplete.

A fault-injecting proxy (tests/fault_servers.py, ``s3_proxy_app``) stands between the
backend and a real SeaweedFS server and breaks chosen calls. What an operator relies on:
a blob is whole or absent whatever S3 does; a failure reaches the caller as a
StorageError (503 from an edge) after a bounded number of bounded attempts; the same
write succeeds once S3 is back; what a failed writer left in the bucket is invisible and
is removed by ``open()`` once it is old enough that no live writer can own it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from edge.app import create_app
from storage_backends import BlobNotFound, DigestMismatch, StorageBackend, StorageError, create_backend
from tests.conftest import UPLOADS, admin, error_of, make_settings
from tests.fault_servers import S3Fault, S3Faults, ThreadedServer, s3_proxy_app

MiB = 1024 * 1024
PART = 5 * MiB
SMALL = os.urandom(200_000)  # one part: a single PUT under the final key
LARGE = os.urandom(PART + 300_000)  # two parts: multipart upload to a temp key, completed, then copied
MAX_ATTEMPTS = 3
# Fast failure for the tests; the defaults (10 s, 60 s, 5 attempts) are bounded the same way.
FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "max_attempts": MAX_ATTEMPTS, "part_size": PART}
# For the time-out tests: each stalled attempt costs this long.
SHORT_READ = {"read_timeout": 1.0}
# A hang guard, not a speed check: far above attempts x read_timeout plus backoff.
GIVE_UP = 60.0


@pytest.fixture(scope="module")
def faults() -> S3Faults:
    return S3Faults()


@pytest.fixture(scope="module")
def proxy(s3_server: dict[str, str], faults: S3Faults) -> Iterator[ThreadedServer]:
    server = ThreadedServer(s3_proxy_app(s3_server["endpoint_url"], faults)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bucket(s3_server: dict[str, str]) -> Iterator[Any]:
    """A client straight to the S3 server, past the proxy: what is really in the bucket."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        region_name=s3_server["region"],
        aws_access_key_id=s3_server["access_key_id"],
        aws_secret_access_key=s3_server["secret_access_key"],
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def prefix(s3_server: dict[str, str], bucket: Any, faults: S3Faults) -> Iterator[str]:
    """A fresh key prefix; afterwards the faults are cleared and everything under it removed."""
    name = f"faults-{uuid.uuid4().hex[:12]}/"
    try:
        yield name
    finally:
        faults.clear()
        left = contents(bucket, s3_server["bucket"], name)
        for key, upload_id in left["uploads"]:
            bucket.abort_multipart_upload(Bucket=s3_server["bucket"], Key=key, UploadId=upload_id)
        for key in left["objects"]:
            bucket.delete_object(Bucket=s3_server["bucket"], Key=key)


@pytest.fixture
def params(s3_server: dict[str, str], proxy: ThreadedServer, prefix: str) -> dict[str, Any]:
    return {
        "endpoint_url": proxy.url,
        "bucket": s3_server["bucket"],
        "prefix": prefix,
        "region": s3_server["region"],
        "access_key_id": s3_server["access_key_id"],
        "secret_access_key": s3_server["secret_access_key"],
    }


@asynccontextmanager
async def opened(params: dict[str, Any], **overrides: Any) -> AsyncIterator[StorageBackend]:
    backend = create_backend("s3", {**params, **FAST, **overrides})
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def store(params: dict[str, Any]) -> AsyncIterator[StorageBackend]:
    async with opened(params) as backend:
        yield backend


def contents(client: Any, bucket: str, prefix: str) -> dict[str, list[Any]]:
    """Every object key and every incomplete multipart upload (key, id) under ``prefix``."""
    objects = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    uploads = [
        (upload["Key"], upload["UploadId"])
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        for upload in page.get("Uploads", [])
    ]
    return {"objects": objects, "uploads": uploads}


async def write(store: StorageBackend, data: bytes) -> str:
    async with await store.writer() as w:
        for i in range(0, len(data), MiB):
            await w.write(data[i : i + MiB])
        return (await w.commit(expected_size=len(data))).sha256


async def read_all(store: StorageBackend, sha: str) -> bytes:
    out = bytearray()
    async for chunk in await store.read(sha):
        out += chunk
    return bytes(out)


async def bounded(what: str, coro: Any) -> Any:
    """Await ``coro``; fail the test as a hang when it has not ended after GIVE_UP seconds."""
    try:
        return await asyncio.wait_for(coro, GIVE_UP)
    except TimeoutError:
        pytest.fail(f"{what} still had no outcome after {GIVE_UP:.0f} s: a time-out is not bounded")


async def assert_absent(store: StorageBackend, data: bytes) -> None:
    """What a reader of the store sees of a blob whose write failed: nothing."""
    sha = hashlib.sha256(data).hexdigest()
    assert not await store.exists(sha)
    with pytest.raises(BlobNotFound):
        await store.stat(sha)
    with pytest.raises(BlobNotFound):
        await store.read(sha)
    assert [s async for s in store.list()] == []


# ---------------------------------------------------------------- one fault: retried, unnoticed


@pytest.mark.parametrize(
    ("operation", "status", "data"),
    [
        ("PutObject", 500, SMALL),
        ("PutObject", 503, SMALL),
        ("HeadObject", 503, SMALL),
        ("CreateMultipartUpload", 503, LARGE),
        ("UploadPart", 500, LARGE),
        ("CompleteMultipartUpload", 500, LARGE),
        ("CopyObject", 503, LARGE),
        ("GetObject", 500, SMALL),
    ],
)
async def test_one_500_or_503_from_s3_is_retried_and_the_blob_is_stored_and_read_whole(
    store: StorageBackend, faults: S3Faults, operation: str, status: int, data: bytes
) -> None:
    faults.add(S3Fault(operation, status))
    sha = await bounded("a write", write(store, data))
    assert await bounded("a read", read_all(store, sha)) == data
    calls = faults.calls(operation)
    assert calls[0] == status and len(calls) >= 2 and calls[1] not in (500, 503), calls


# ---------------------------------------------------------------- S3 down: StorageError, nothing visible


@pytest.mark.parametrize(
    ("operation", "status", "after", "data"),
    [
        ("PutObject", 500, 0, SMALL),
        ("PutObject", 503, 0, SMALL),
        ("CreateMultipartUpload", 500, 0, LARGE),
        ("UploadPart", 503, 0, LARGE),
        ("UploadPart", 500, 1, LARGE),  # the second part, sent by commit
        ("CompleteMultipartUpload", 500, 0, LARGE),
        ("CopyObject", 500, 0, LARGE),
    ],
)
async def test_a_write_s3_keeps_failing_raises_storage_error_leaves_nothing_and_succeeds_once_s3_is_back(
    store: StorageBackend,
    faults: S3Faults,
    bucket: Any,
    params: dict[str, Any],
    operation: str,
    status: int,
    after: int,
    data: bytes,
) -> None:
    faults.add(S3Fault(operation, status, times=0, after=after))
    with pytest.raises(StorageError) as failed:
        await bounded("a write to a failing S3", write(store, data))
    assert not isinstance(failed.value, BlobNotFound | DigestMismatch), failed.value
    assert ("InternalError" if status == 500 else "SlowDown") in str(failed.value)
    # boto3 retried, and a bounded number of times
    assert faults.calls(operation) == [200] * after + [status] * MAX_ATTEMPTS
    await assert_absent(store, data)
    # neither a final key nor a temp object nor an open multipart upload is left behind
    assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": [], "uploads": []}
    faults.clear()
    sha = await bounded("a write after S3 came back", write(store, data))
    assert sha == hashlib.sha256(data).hexdigest()
    assert await read_all(store, sha) == data
    assert [s async for s in store.list()] == [sha]


async def test_a_read_s3_keeps_failing_raises_storage_error_and_the_blob_is_read_whole_once_s3_is_back(
    store: StorageBackend, faults: S3Faults
) -> None:
    sha = await write(store, SMALL)
    faults.add(S3Fault("GetObject", 503, times=0))
    with pytest.raises(StorageError) as failed:
        await bounded("a read from a failing S3", store.read(sha))
    assert not isinstance(failed.value, BlobNotFound)
    assert faults.calls("GetObject") == [503] * MAX_ATTEMPTS
    faults.clear()
    assert await read_all(store, sha) == SMALL


# ---------------------------------------------------------------- time-outs


async def test_a_stalled_s3_call_is_given_up_after_the_read_timeout_and_retried(
    params: dict[str, Any], faults: S3Faults
) -> None:
    faults.add(S3Fault("UploadPart", None), S3Fault("CompleteMultipartUpload", None), S3Fault("GetObject", None))
    async with opened(params, **SHORT_READ) as store:
        sha = await bounded("a write with stalled calls", write(store, LARGE))
        assert await bounded("a read with a stalled call", read_all(store, sha)) == LARGE
    for operation in ("UploadPart", "CompleteMultipartUpload", "GetObject"):
        calls = faults.calls(operation)
        assert calls[0] is None and calls[1] is not None, (operation, calls)


@pytest.mark.parametrize(("operation", "data"), [("PutObject", SMALL), ("CompleteMultipartUpload", LARGE)])
async def test_an_s3_that_never_answers_fails_the_write_after_bounded_attempts_and_leaves_nothing(
    params: dict[str, Any], faults: S3Faults, bucket: Any, operation: str, data: bytes
) -> None:
    faults.add(S3Fault(operation, None, times=0))
    async with opened(params, **SHORT_READ) as store:
        with pytest.raises(StorageError) as failed:
            await bounded("a write to an S3 that never answers", write(store, data))
        assert "timeout" in str(failed.value).lower()
        assert faults.calls(operation) == [None] * MAX_ATTEMPTS
        await assert_absent(store, data)
        assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": [], "uploads": []}
        faults.clear()
        assert await read_all(store, await write(store, data)) == data


async def test_a_download_whose_bytes_stop_coming_fails_instead_of_ending_short(
    params: dict[str, Any], faults: S3Faults
) -> None:
    async with opened(params, **SHORT_READ) as store:
        sha = await write(store, LARGE)
        faults.add(S3Fault("GetObject", times=0, stall_after_bytes=100_000))
        received = bytearray()

        async def drain() -> None:
            async for chunk in await store.read(sha):
                received.extend(chunk)

        with pytest.raises(StorageError):
            await bounded("a read whose bytes stopped", drain())
        assert len(received) < len(LARGE)
        faults.clear()
        assert await read_all(store, sha) == LARGE


# ---------------------------------------------------------------- what a failed writer leaves behind


@pytest.mark.parametrize(
    ("left", "broken"),
    [
        ("an incomplete multipart upload", ("CompleteMultipartUpload", "AbortMultipartUpload")),
        ("a temporary object", ("CopyObject", "DeleteObject")),
    ],
)
async def test_what_a_failed_writer_could_not_clean_is_invisible_and_swept_by_open_once_stale(
    params: dict[str, Any], faults: S3Faults, bucket: Any, left: str, broken: tuple[str, str]
) -> None:
    # S3 fails the step that publishes the blob and then the step that would clean up after it
    faults.add(*(S3Fault(op, 500, times=0) for op in broken))
    async with opened(params) as store:
        with pytest.raises(StorageError):
            await bounded("a write to a failing S3", write(store, LARGE))
        await assert_absent(store, LARGE)
    faults.clear()
    found = contents(bucket, params["bucket"], params["prefix"])
    temp = f"{params['prefix']}tmp/"
    if left == "an incomplete multipart upload":
        assert found["objects"] == [] and len(found["uploads"]) == 1, found
        assert found["uploads"][0][0].startswith(temp)
    else:
        assert found["uploads"] == [] and len(found["objects"]) == 1, found
        assert found["objects"][0].startswith(temp)
    # another process opening the bucket now must not take a writer's upload from under it
    async with opened(params) as store:
        await assert_absent(store, LARGE)
    assert contents(bucket, params["bucket"], params["prefix"]) == found
    # once older than the stale age, open() removes it
    async with opened(params, stale_upload_seconds=0) as store:
        await assert_absent(store, LARGE)
    assert contents(bucket, params["bucket"], params["prefix"]) == {"objects": [], "uploads": []}


def test_a_negative_stale_age_is_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="stale_upload_seconds"):
        create_backend("s3", {**params, "stale_upload_seconds": -1})


# ---------------------------------------------------------------- through an edge


async def test_an_edge_answers_503_while_s3_fails_stores_nothing_and_serves_the_file_once_s3_is_back(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], faults: S3Faults
) -> None:
    storage = {"backend": "s3", "redirect_downloads": False, **params}
    client = await aiohttp_client(create_app(make_settings(tmp_path, storage=storage)))
    url = f"/artifactory/{UPLOADS}/tools/app.tar.gz"
    faults.add(S3Fault("PutObject", 500, times=0))
    refused = await client.put(url, data=SMALL, headers=admin())
    assert await error_of(refused) == (503, "Storage is unavailable, retry later")
    assert (await client.get(url)).status == 404
    assert (await client.get(f"/artifactory/api/storage/{UPLOADS}/tools/app.tar.gz")).status == 404
    faults.clear()
    stored = await client.put(url, data=SMALL, headers=admin())
    assert stored.status == 201, await stored.text()
    faults.add(S3Fault("GetObject", 500, times=0))
    unavailable = await client.get(url)
    assert await error_of(unavailable) == (503, "Storage is unavailable, retry later")
    faults.clear()
    served = await client.get(url)
    assert served.status == 200 and await served.read() == SMALL
