"""Blobs in an S3 bucket (AWS or any S3-compatible server) under ``{prefix}blobs/ab/cd/abcd...``.

A blob is never half-visible under its final key: a blob that fits in one part is
put under its final key in one request once its SHA-256 is known; a larger one is
streamed as a multipart upload to ``{prefix}tmp/<uuid>``, completed only after its
digests check out, then copied server-side to its final key. Memory per writer is
bounded by one part whatever the blob size.

Blobs whose SHA-256 the caller already knows (a batch of small blobs, a verified file)
go straight to their final keys, many requests at once (``s3_parallel``). Every write
is durable when S3 answers it, so a caller may record a blob as stored the moment the
call returns (``durable_on_write``).

boto3 is synchronous, so every call (and the hashing of each part, in the same
hop) runs in one thread pool owned by the backend, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import s3_parallel
from .base import READ_CHUNK, BlobInfo, BlobWriter, StorageBackend, check_range, check_sha256, content_disposition
from .errors import BlobsNotDeleted, StorageError
from .s3_common import (
    COPY_MULTIPART_THRESHOLD,
    COPY_PART_SIZE,
    MAX_PART_SIZE,
    MAX_WRITE_CONCURRENCY,
    MIN_PART_SIZE,
    NOT_FOUND_CODES,
    MiB,
    T,
    error_code,
    guarded,
    s3_errors,
)
from .s3_staging import S3StagingArea
from .s3_writer import S3Writer

log = logging.getLogger(__name__)

STALE_UPLOAD_SECONDS = 3600.0
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
# Requests carrying blob bytes in flight at once (parts of files, blobs of batches): enough to
# keep an S3 server busy through its round trips. They get threads of their own, so downloads
# and single calls keep ``max_workers`` threads whatever is being written.
WRITE_CONCURRENCY = 8
# Keys one DeleteObjects request may carry (S3's limit).
DELETE_BATCH = 1000


class S3Backend(StorageBackend):
    """Content-addressed blobs in one bucket, shareable by any number of edge processes."""

    durable_on_write = True
    presigns = True

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        bucket: str,
        prefix: str = "",
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 8 * MiB,
        addressing_style: Literal["path", "virtual", "auto"] = "path",
        max_workers: int = 16,
        write_concurrency: int = WRITE_CONCURRENCY,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        stale_upload_seconds: float = STALE_UPLOAD_SECONDS,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if addressing_style not in ("path", "virtual", "auto"):
            raise ValueError("addressing_style must be path, virtual or auto")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (the first try)")
        if stale_upload_seconds < 0:
            raise ValueError("stale_upload_seconds must not be negative")
        if not 1 <= write_concurrency <= MAX_WRITE_CONCURRENCY:
            raise ValueError(f"write_concurrency must be 1 to {MAX_WRITE_CONCURRENCY}")
        # How old an incomplete upload or temp object must be before open() removes it: long
        # enough that no writer of another process sharing the bucket is still at work on it.
        self.stale_upload_seconds = stale_upload_seconds
        prefix = prefix.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.bucket, self.part_size, self.endpoint_url = bucket, part_size, endpoint_url
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,  # None: boto3's usual chain (env, profile, instance role)
            "aws_secret_access_key": secret_access_key,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                # standard mode retries 500/503, throttling, time-outs and dropped connections with
                # backoff; botocore's own "max_attempts" counts retries only, one call too many
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # managed copies add their own threads
                max_pool_connections=max_workers + write_concurrency + 10,
                tcp_keepalive=True,
            ),
        }
        threads = max_workers + write_concurrency
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="s3-blobs")
        self.write_slots = asyncio.Semaphore(write_concurrency)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("S3 backend used before open()")
        return self._client

    def blob_key(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def open(self) -> None:
        await self._call(self._connect)
        await self._call(self._remove_stale)

    def _connect(self) -> None:
        self._client = boto3.session.Session().client("s3", **self._client_args)
        where = f"S3 bucket {self.bucket!r} at {self.endpoint_url or 'AWS'}"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in _NO_BUCKET:
                raise StorageError(f"{where} does not exist; create it first") from None
            if error_code(exc) in ("403", "AccessDenied"):
                raise StorageError(f"{where}: access denied; check the credentials") from None
            raise StorageError(f"{where} cannot be opened: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{where} is unreachable: {exc}") from exc

    def _remove_stale(self) -> None:
        """Abort uploads and delete temp objects that crashed writers left behind: uploads under
        ``tmp/`` (writers) and under ``blobs/`` (verified files, uploaded straight to their keys).

        Other processes may share the bucket and be writing right now, so only
        what is older than ``stale_upload_seconds`` (an hour by default) goes.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_upload_seconds)
        client, bucket, temp = self._client, self.bucket, f"{self.prefix}tmp/"
        try:
            for prefix in (temp, f"{self.prefix}blobs/"):
                for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
                    for upload in page.get("Uploads", []):
                        key, upload_id = upload["Key"], upload["UploadId"]
                        if upload["Initiated"] < cutoff:
                            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                            log.info("aborted stale multipart upload of %s", key)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=temp):
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < cutoff:
                        client.delete_object(Bucket=bucket, Key=obj["Key"])
                        log.info("deleted stale temporary object %s", obj["Key"])
        except (ClientError, BotoCoreError) as exc:  # not fatal: serving still works
            log.warning("could not clean stale uploads under %s: %s", temp, exc)

    async def check(self) -> None:
        await self._call(self._head_bucket)

    def _head_bucket(self) -> None:
        with s3_errors(f"head of bucket {self.bucket}"):
            self.client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def writer(self, *, all_digests: bool = True) -> BlobWriter:
        self.client  # noqa: B018 - fail now, not at the first full part
        return S3Writer(self, all_digests)

    def staging_area(self) -> S3StagingArea:
        """Chunks under ``{prefix}staging/``, which every edge sharing the bucket reads (s3_staging.py)."""
        return S3StagingArea(self)

    async def write_many(self, blobs: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        for sha256, _ in blobs:
            check_sha256(sha256)
        await s3_parallel.write_many(self, blobs)

    async def adopt(self, path: Path, sha256: str, size: int) -> bool:
        """Upload the verified file straight to its final key (parts in parallel), then remove it."""
        check_sha256(sha256)
        await s3_parallel.put_file(self, Path(path), sha256, size)
        await asyncio.to_thread(Path(path).unlink)
        return True

    def key_exists(self, key: str) -> bool:
        with s3_errors(f"head of {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND_CODES:
                    return False
                raise
        return True

    def _head(self, sha256: str) -> BlobInfo:
        with s3_errors(f"head of blob {sha256}", sha256):
            head = self.client.head_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        modified = head["LastModified"].astimezone(UTC)
        return BlobInfo(sha256=sha256, size=head["ContentLength"], modified=modified)

    async def stat(self, sha256: str) -> BlobInfo:
        check_sha256(sha256)
        return await self._call(self._head, sha256)

    async def read(self, sha256: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        check_sha256(sha256)
        body, remaining = await self._call(self._open_window, sha256, offset, length)
        return self._stream(body, remaining)

    def _open_window(self, sha256: str, offset: int, length: int | None) -> tuple[Any, int]:
        """One ranged GET answers both the size check and the bytes; HEAD only for empty windows."""
        if offset < 0 or (length is not None and length <= 0):
            check_range(sha256, self._head(sha256).size, offset, length)
            return None, 0  # no Range header can ask for nothing
        last = "" if length is None else str(offset + length - 1)
        key = self.blob_key(sha256)
        with s3_errors(f"read of blob {sha256}", sha256):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{last}")
            except ClientError as exc:
                if error_code(exc) not in ("InvalidRange", "416"):
                    raise
                response = None
        if response is None:  # offset at or past the end: empty at the end, InvalidOffset beyond it
            check_range(sha256, self._head(sha256).size, offset, length)
            return None, 0
        body = response["Body"]
        try:
            content_range = response.get("ContentRange")  # "bytes 3-9/10"
            if content_range:
                size = int(content_range.rsplit("/", 1)[1])
            elif offset == 0:
                size = response["ContentLength"]  # a server that answers a whole-object range with 200
            else:
                raise StorageError(f"S3 ignored the Range of a read of blob {sha256}")
            return body, check_range(sha256, size, offset, length)
        except BaseException:
            body.close()
            raise

    async def _stream(self, body: Any, remaining: int) -> AsyncGenerator[bytes, None]:
        try:
            while remaining > 0:
                chunk: bytes = await self._call(guarded, "read", body.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise StorageError("blob shorter than its recorded size")
                remaining -= len(chunk)
                yield chunk
        finally:
            if body is not None:
                body.close()  # frees the connection when a client stops reading early

    async def delete(self, sha256: str) -> None:
        check_sha256(sha256)
        await self._call(self._delete, sha256)

    def _delete(self, sha256: str) -> None:
        self._head(sha256)  # S3 deletes are silent about missing keys; the contract is not
        with s3_errors(f"delete of blob {sha256}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.blob_key(sha256))

    async def delete_many(self, sha256s: Sequence[str]) -> None:
        """DeleteObjects, ``DELETE_BATCH`` keys a request; a key S3 reports it could not delete, or
        every key of a request that failed after its retries, is named by BlobsNotDeleted once
        every batch is tried. S3 reports no error for a key that is not there."""
        keys = {self.blob_key(sha256): sha256 for sha256 in sha256s}  # every name checked first
        listed = list(keys)
        failed: list[str] = []
        reason = ""
        for start in range(0, len(listed), DELETE_BATCH):
            for key, why in await self._call(self._delete_batch, listed[start : start + DELETE_BATCH]):
                if key in keys:  # an error for a key not asked for says nothing of ours
                    failed.append(keys[key])
                    reason = why
        if failed:
            raise BlobsNotDeleted(failed, reason)

    def _delete_batch(self, keys: list[str]) -> list[tuple[str, str]]:
        """One DeleteObjects; answers each key not deleted, with S3's reason."""
        try:
            with s3_errors(f"delete of {len(keys)} blobs"):
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
                )
        except StorageError as exc:
            return [(key, str(exc)) for key in keys]
        return [
            (str(e.get("Key")), f"S3 {e.get('Code')}: {e.get('Message')}")
            for e in answer.get("Errors", [])
            if e.get("Code") not in NOT_FOUND_CODES
        ]

    async def quarantine(self, sha256: str) -> str:
        check_sha256(sha256)
        return await self._call(self._quarantine, sha256)

    def _quarantine(self, sha256: str) -> str:
        """A server-side copy to ``{prefix}quarantine/``, then the blob's own key deleted."""
        self._head(sha256)  # BlobNotFound if absent
        target = f"{self.prefix}quarantine/{sha256}.{time.time_ns()}"
        config = TransferConfig(multipart_threshold=COPY_MULTIPART_THRESHOLD, multipart_chunksize=COPY_PART_SIZE)
        with s3_errors(f"quarantine of blob {sha256}"):
            source = {"Bucket": self.bucket, "Key": self.blob_key(sha256)}
            self.client.copy(source, self.bucket, target, Config=config)
            self.client.delete_object(**source)
        return f"s3://{self.bucket}/{target}"

    async def list(self) -> AsyncGenerator[str, None]:  # type: ignore[override]
        paginator = await self._call(self.client.get_paginator, "list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"))  # lazy: no I/O
        while (page := await self._call(guarded, "list", next, pages, None)) is not None:
            for obj in page.get("Contents", []):
                sha256 = obj["Key"].rsplit("/", 1)[-1]
                try:
                    if obj["Key"] == self.blob_key(sha256):  # skip anything foreign under blobs/
                        yield sha256
                except StorageError:
                    continue

    async def presigned_url(
        self, sha256: str, *, expires_in: int, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        if not 0 < expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        params = {"Bucket": self.bucket, "Key": self.blob_key(sha256)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type is not None:
            if any(ch < " " or ch == "\x7f" for ch in content_type):
                raise ValueError("content_type contains control characters")
            params["ResponseContentType"] = content_type
        # Presigning is local but may refresh credentials over the network: off the loop too.
        sign = self.client.generate_presigned_url
        url: str = await self._call(guarded, "presigning", sign, "get_object", params, expires_in)
        return url
