"""S3 multipart completion under the faults tests/test_s3_faults.py does not try: an answer lost
after S3 completed the upload (a duplicate completion), a byte damaged on the way to S3, and an
edge killed with SIGKILL while its multipart upload is open.

What an operator relies on: a blob is whole under its final key or absent from it, whatever
happens; blobs stored before are untouched; and the same write succeeds afterwards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from storage_backends import StorageBackend, StorageError
from tests import test_s3_faults as s3_faults
from tests.edge_setup import download
from tests.fault_servers import S3Fault, S3Faults
from tests.test_s3_faults import LARGE, SMALL, bounded, contents, read_all, write

MiB = 1024 * 1024
UPLOADS = "artifactory-edge-uploads"
EDGE_PART = 8 * MiB  # the S3 backend's default part size, which an edge uses

# Fixtures shared with tests/test_s3_faults.py: a client straight to the bucket, the fault proxy
# in front of the S3 server and its faults, a fresh key prefix, and a store behind the proxy.
bucket, faults, params, prefix, proxy, store = (
    s3_faults.bucket, s3_faults.faults, s3_faults.params, s3_faults.prefix, s3_faults.proxy, s3_faults.store
)  # fmt: skip


async def test_a_completion_whose_answer_is_lost_is_completed_again_and_the_blob_is_whole(
    store: StorageBackend, faults: S3Faults, bucket: Any, params: dict[str, Any]
) -> None:
    kept = await write(store, SMALL)
    faults.add(S3Fault("CompleteMultipartUpload", 500, lose_answer=True))  # S3 completed it; nobody heard
    sha = await bounded("a write whose completion answer is lost", write(store, LARGE))
    assert faults.calls("CompleteMultipartUpload")[:2] == [500, 200], faults.seen  # asked again, answered
    assert sha == hashlib.sha256(LARGE).hexdigest()
    assert await read_all(store, sha) == LARGE
    assert await read_all(store, kept) == SMALL
    found = contents(bucket, params["bucket"], params["prefix"])
    assert found["uploads"] == [] and sorted(found["objects"]) == sorted(
        f"{params['prefix']}blobs/{s[:2]}/{s[2:4]}/{s}" for s in (sha, kept)
    ), found


@pytest.mark.parametrize(
    ("operation", "data"),
    [("UploadPart", LARGE), ("PutObject", SMALL)],
    ids=["a-part-of-a-multipart-upload", "a-single-put"],
)
async def test_a_byte_damaged_on_the_way_to_s3_is_refused_and_publishes_nothing(
    store: StorageBackend, faults: S3Faults, bucket: Any, params: dict[str, Any], operation: str, data: bytes
) -> None:
    kept = await write(store, os.urandom(1000))
    faults.add(S3Fault(operation, flip_byte_at=1000))
    with pytest.raises(StorageError, match="BadDigest"):
        await bounded("a write damaged in transit", write(store, data))
    sha = hashlib.sha256(data).hexdigest()
    assert not await store.exists(sha)
    assert [s async for s in store.list()] == [kept]
    assert contents(bucket, params["bucket"], params["prefix"])["uploads"] == []
    assert await bounded("the same write again", write(store, data)) == sha
    assert await read_all(store, sha) == data


# ---------------------------------------------------------------- an edge killed mid-upload


@pytest.fixture
def s3_edge(s3_server: dict[str, str], prefix: str, tmp_path: Path) -> Iterator[EdgeProcess]:
    """An edge process storing its blobs under a fresh prefix of the shared bucket (emptied after)."""
    env = {
        "EDGE_STORAGE_BACKEND": "s3",
        "EDGE_STORAGE_ENDPOINT_URL": s3_server["endpoint_url"],
        "EDGE_STORAGE_BUCKET": s3_server["bucket"],
        "EDGE_STORAGE_PREFIX": prefix,
        "EDGE_STORAGE_REGION": s3_server["region"],
        "EDGE_STORAGE_ACCESS_KEY_ID": s3_server["access_key_id"],
        "EDGE_STORAGE_SECRET_ACCESS_KEY": s3_server["secret_access_key"],
        "EDGE_STORAGE_REDIRECT_DOWNLOADS": "false",
    }
    with EdgeProcess(tmp_path / "edge", env=env) as edge:
        yield edge


def put_head(edge: EdgeProcess, path: str, length: int) -> bytes:
    """The head of a deploy to the uploads repo, as a client sends it."""
    auth = f"Authorization: Bearer {edge.admin_token}"
    return (
        f"PUT /artifactory/{UPLOADS}/{path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: {length}\r\n\r\n".encode()
    )


def put(edge: EdgeProcess, path: str, data: bytes) -> int:
    """Deploy ``data``; the answer's status."""
    with socket.create_connection(("127.0.0.1", edge.port or 0), timeout=60) as sock:
        sock.sendall(put_head(edge, path, len(data)) + data)
        return int(sock.recv(1024).split(b" ", 2)[1])


def test_an_edge_killed_with_its_multipart_upload_open_shows_nothing_of_it_and_keeps_what_it_stored(
    s3_edge: EdgeProcess,
    prefix: str,
    s3_server: dict[str, str],
    bucket: Any,
) -> None:
    edge, key_prefix = s3_edge, prefix
    kept = os.urandom(100_000)
    assert put(edge, "kept.bin", kept) == 201
    big = os.urandom(EDGE_PART + 4 * MiB)
    with socket.create_connection(("127.0.0.1", edge.port or 0), timeout=60) as sock:
        sock.sendall(put_head(edge, "big.bin", len(big)) + big[: EDGE_PART + MiB])
        deadline = time.monotonic() + 30  # a hang guard, not a speed check
        while not contents(bucket, s3_server["bucket"], key_prefix)["uploads"]:
            if time.monotonic() >= deadline:
                pytest.fail("the edge never opened a multipart upload")
            time.sleep(0.05)
        os.kill(edge.pid, signal.SIGKILL)
        assert edge.wait(20) == -signal.SIGKILL
    edge.start()

    assert download(edge.url, f"{UPLOADS}/big.bin")[0] == 404
    assert download(edge.url, f"{UPLOADS}/kept.bin") == (200, kept)
    left = contents(bucket, s3_server["bucket"], key_prefix)
    sha = hashlib.sha256(big).hexdigest()
    assert all(key.startswith(f"{key_prefix}tmp/") for key, _ in left["uploads"]), left
    assert not any(key.endswith(sha) for key in left["objects"]), left
    assert put(edge, "big.bin", big) == 201
    assert download(edge.url, f"{UPLOADS}/big.bin") == (200, big)


# ---------------------------------------------------------------- small files from S3


def blob_key(prefix: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"{prefix}blobs/{sha[:2]}/{sha[2:4]}/{sha}"


def test_a_small_file_is_read_from_s3_once_checked_then_served_from_memory(
    s3_edge: EdgeProcess, s3_server: dict[str, str], bucket: Any, prefix: str
) -> None:
    data = b"a small config file\n" * 10
    assert put(s3_edge, "conf/app.cfg", data) == 201
    assert download(s3_edge.url, f"{UPLOADS}/conf/app.cfg") == (200, data)
    bucket.delete_object(Bucket=s3_server["bucket"], Key=blob_key(prefix, data))
    # the bucket no longer has it: the second answer came from the edge's memory, not from S3
    assert download(s3_edge.url, f"{UPLOADS}/conf/app.cfg") == (200, data)


def test_a_small_file_whose_bytes_changed_in_the_bucket_is_never_served(
    s3_edge: EdgeProcess, s3_server: dict[str, str], bucket: Any, prefix: str
) -> None:
    data = b"the right bytes\n"
    assert put(s3_edge, "conf/app.cfg", data) == 201
    bucket.put_object(Bucket=s3_server["bucket"], Key=blob_key(prefix, data), Body=b"THE WRONG BYTES\n")
    status, body = download(s3_edge.url, f"{UPLOADS}/conf/app.cfg")
    assert status == 409 and b"sha256 mismatch found when served" in body
