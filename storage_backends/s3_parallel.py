"""S3 writes that go out in parallel: many small blobs in one call, and the parts of a large file.

One PUT at a time leaves an S3 server idle for a round trip per blob, so a bundle of many
small files took many times longer on an S3 edge than on local disk. Here every blob of a
batch, and every part of a file, is its own request, running in the backend's thread pool
with at most ``write_concurrency`` in flight across the whole backend (the rest of the pool
stays free for downloads). A blob is still never half-visible: a PUT is atomic, and a
multipart upload publishes its key only when completed, after every part has arrived.

After the first failure no further request starts; those already running are waited for
(so nothing lands after the call has returned or an upload was aborted), then the error is
raised. A cancelled call waits the same way.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DigestMismatch, StorageError
from .s3_common import MAX_PARTS, OCTETS, T, s3_errors

if TYPE_CHECKING:
    from .s3 import S3Backend

log = logging.getLogger(__name__)


class _NotStarted(Exception):
    """A job skipped because another one of its call failed first."""


async def settled(future: concurrent.futures.Future[T]) -> T:
    """The result of a job in a worker thread; when the caller is cancelled, a job already
    running is waited for before the cancellation goes on, so nothing it sends lands later."""
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if not future.cancel():
            await asyncio.wait([asyncio.wrap_future(future)])
        raise


async def run_all(backend: S3Backend, jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run blocking jobs in the backend's pool, each holding one of its write slots."""
    failed = False

    async def run(job: Callable[[], T]) -> T:
        nonlocal failed
        async with backend.write_slots:
            if failed:
                raise _NotStarted
            try:
                return await settled(backend.submit(job))
            except BaseException:
                failed = True
                raise

    results = await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, _NotStarted):
            raise result
    return results  # type: ignore[return-value]


def put_blob(backend: S3Backend, sha256: str, body: bytes | bytearray) -> None:
    """One PUT under the blob's final key. The server checks the SHA-256 itself, so bytes
    damaged in transit are refused rather than stored under a name they do not match."""
    checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
    with s3_errors(f"put of blob {sha256}"):
        backend.client.put_object(
            Bucket=backend.bucket, Key=backend.blob_key(sha256), Body=body, ContentType=OCTETS, ChecksumSHA256=checksum
        )


def _checked(blobs: Sequence[tuple[str, Sequence[bytes]]]) -> tuple[list[tuple[str, bytes]], DigestMismatch | None]:
    """Each blob's bytes joined and hashed, up to the first whose sha256 is not its name."""
    bodies: list[tuple[str, bytes]] = []
    for sha256, chunks in blobs:
        body = b"".join(chunks)
        actual = hashlib.sha256(body).hexdigest()
        if actual != sha256:
            return bodies, DigestMismatch("sha256", sha256, actual)
        bodies.append((sha256, body))
    return bodies, None


async def write_many(backend: S3Backend, blobs: Sequence[tuple[str, Sequence[bytes]]]) -> None:
    """``StorageBackend.write_many``: the blobs before a mismatch are stored, at once, then it is raised.
    No HEAD first: the caller stores only blobs it lacks, and the same bytes again are harmless."""
    bodies, mismatch = await asyncio.to_thread(_checked, blobs)
    await run_all(backend, [partial(put_blob, backend, sha256, body) for sha256, body in bodies])
    if mismatch is not None:
        raise mismatch


async def put_file(backend: S3Backend, path: Path, sha256: str, size: int) -> None:
    """``StorageBackend.adopt`` for a file the caller has verified: one PUT when it fits in a part,
    else a multipart upload straight to the final key with its parts in parallel (nothing to
    copy afterwards, as a writer that learns the name only at the end must)."""
    found = (await asyncio.to_thread(os.stat, path)).st_size
    if found != size:
        raise DigestMismatch("size", size, found)
    if size <= backend.part_size:
        body = await asyncio.to_thread(path.read_bytes)
        await run_all(backend, [partial(put_blob, backend, sha256, body)])
        return
    count = -(-size // backend.part_size)
    if count > MAX_PARTS:
        raise StorageError(f"blob of {size} bytes exceeds {MAX_PARTS} parts of {backend.part_size}; raise part_size")
    key = backend.blob_key(sha256)
    created = await one(backend, partial(create_upload, backend, key))
    try:
        jobs = [partial(_send_part, backend, path, key, created, number, size) for number in range(1, count + 1)]
        parts = await run_all(backend, jobs)
        await one(backend, partial(complete, backend, key, created, parts))
    except BaseException:
        await abandon(backend, key, created)
        raise


async def abandon(backend: S3Backend, key: str, upload_id: str) -> None:
    """Abort a multipart upload that failed; a failure to abort is only logged."""
    try:
        await one(backend, partial(_abort, backend, key, upload_id))
    except StorageError as exc:  # open() of any process sharing the bucket removes it once stale
        log.warning("could not abort the multipart upload of %s: %s", key, exc)


def one(backend: S3Backend, job: Callable[[], T]) -> Awaitable[T]:
    """A single step of an upload (create, complete, abort): no write slot, it carries no bytes."""
    return settled(backend.submit(job))


def create_upload(backend: S3Backend, key: str) -> str:
    with s3_errors("multipart upload"):
        created = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=key, ContentType=OCTETS)
    return str(created["UploadId"])


def _send_part(backend: S3Backend, path: Path, key: str, upload_id: str, number: int, size: int) -> dict[str, Any]:
    """Part ``number`` (from 1), read from the file by this worker thread: one part in memory per upload slot."""
    offset = (number - 1) * backend.part_size
    length = min(backend.part_size, size - offset)
    with open(path, "rb") as f:
        body = os.pread(f.fileno(), length, offset)
    if len(body) != length:  # the file shrank since it was measured: never complete a short blob
        raise DigestMismatch("size", size, offset + len(body))
    with s3_errors("multipart upload"):
        part = backend.client.upload_part(
            Bucket=backend.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
    return {"PartNumber": number, "ETag": part["ETag"]}


def complete(backend: S3Backend, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
    with s3_errors("completing multipart upload"):
        backend.client.complete_multipart_upload(
            Bucket=backend.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )


def _abort(backend: S3Backend, key: str, upload_id: str) -> None:
    with s3_errors("abort of multipart upload"):
        backend.client.abort_multipart_upload(Bucket=backend.bucket, Key=key, UploadId=upload_id)
