"""Blobs in an S3 bucket (AWS or any S3-compatible server) under ``{prefix}blobs/ab/cd/abcd...``.

A blob is never half-visible under its final key: a blob that fits in one part is
put under its final key in one request once its SHA-256 is known; a larger one is
streamed as a multipart upload to ``{prefix}tmp/<uuid>``, completed only after its
digests check out, then copied server-side to its final key. Memory per writer is
bounded by one part whatever the blob size.

boto3 is synchronous, so every call (and the hashing of each part, in the same
hop) runs in one thread pool owned by the backend, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    READ_CHUNK,
    BlobInfo,
    BlobWriter,
    Digests,
    MultiHasher,
    StorageBackend,
    check_range,
    check_sha256,
    verify_digests,
)
from .errors import BlobNotFound, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
COPY_MULTIPART_THRESHOLD = 5 * GiB  # CopyObject's limit; above it the managed copy goes part by part
COPY_PART_SIZE = 512 * MiB
STALE_UPLOAD_SECONDS = 3600
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
OCTETS = "application/octet-stream"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _s3_errors(what: str, sha256: str | None = None) -> Iterator[None]:
    """Translate boto3 failures (HTTP errors, refused connections, time-outs, broken
    streams) so callers only ever see the errors in errors.py."""
    try:
        yield
    except ClientError as exc:
        if sha256 is not None and _code(exc) in _NOT_FOUND:
            raise BlobNotFound(sha256) from None
        raise StorageError(f"S3 {what} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 {what} failed: {exc}") from exc


def _guarded(what: str, fn: Callable[..., T], *args: Any) -> T:
    """One boto3 call, made in a worker thread, with its errors translated."""
    with _s3_errors(what):
        return fn(*args)


def content_disposition(filename: str) -> str:
    """``attachment`` with an RFC 6266 quoted ASCII name, plus ``filename*`` when that loses anything."""
    name = "".join(ch for ch in filename if ch >= " " and ch != "\x7f")  # nothing that could split a header
    quoted = "".join(ch if ch.isascii() else "_" for ch in name).replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{quoted}"'
    if quoted != name:  # user agents that read filename* get the exact name
        value += "; filename*=UTF-8''" + quote(name, safe="")
    return value


class S3Writer(BlobWriter):
    """Buffers one part; a full part goes out only once more bytes arrive, so the last part is never empty."""

    def __init__(self, backend: S3Backend, all_digests: bool) -> None:
        self._backend = backend
        self._hasher = MultiHasher(all_digests)
        self._buffer = bytearray()
        self._size = 0
        self._temp_key = f"{backend.prefix}tmp/{uuid.uuid4().hex}"
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._temp_completed = False
        self._pending: concurrent.futures.Future[Any] | None = None
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Remember the job: if this task is cancelled mid-part, cancel() waits for the
        # part to land before aborting, or S3 could keep a part of an aborted upload.
        self._pending = self._backend.submit(fn, *args)
        return await asyncio.wrap_future(self._pending)

    def _take(self) -> bytearray:
        chunk, self._buffer = self._buffer, bytearray()
        return chunk

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or cancel")
        part_size = self._backend.part_size
        view = memoryview(data)
        while view:
            if len(self._buffer) == part_size:
                try:
                    await self._run(self._send_part, self._take())
                except BaseException:
                    await self.cancel()  # the part is lost: this writer can never commit correctly
                    raise
            piece = view[: part_size - len(self._buffer)]
            self._buffer += piece
            self._size += len(piece)
            view = view[len(piece) :]

    def _send_part(self, chunk: bytearray) -> None:
        if len(self._parts) >= MAX_PARTS:
            raise StorageError(f"blob exceeds {MAX_PARTS} parts of {len(chunk)} bytes; raise part_size")
        self._hasher.update(chunk)
        client, bucket, key = self._backend.client, self._backend.bucket, self._temp_key
        with _s3_errors("multipart upload"):
            if self._upload_id is None:
                created = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=OCTETS)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            part = client.upload_part(
                Bucket=bucket, Key=key, UploadId=self._upload_id, PartNumber=number, Body=chunk
            )
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    async def commit(
        self, *, expected: Mapping[str, str] | None = None, expected_size: int | None = None
    ) -> Digests:
        if self._done:
            raise StorageError("commit after commit or cancel")
        finish = self._put_whole if self._upload_id is None else self._finish_multipart
        try:
            digests = await self._run(finish, expected, expected_size)
        except BaseException:
            await self.cancel()
            raise
        self._done = True
        return digests

    def _put_whole(self, expected: Mapping[str, str] | None, expected_size: int | None) -> Digests:
        chunk = self._take()
        self._hasher.update(chunk)
        digests = self._hasher.digests()
        verify_digests(digests, expected, expected_size)
        backend, key = self._backend, self._backend.blob_key(digests.sha256)
        if not backend.key_exists(key):
            # The server checks the SHA-256 itself, so bytes damaged in transit are refused.
            checksum = base64.b64encode(bytes.fromhex(digests.sha256)).decode()
            with _s3_errors(f"put of blob {digests.sha256}"):
                backend.client.put_object(
                    Bucket=backend.bucket, Key=key, Body=chunk, ContentType=OCTETS, ChecksumSHA256=checksum
                )
        return digests

    def _finish_multipart(self, expected: Mapping[str, str] | None, expected_size: int | None) -> Digests:
        self._send_part(self._take())
        digests = self._hasher.digests()
        verify_digests(digests, expected, expected_size)  # raising here lets commit() abort the upload
        backend, temp = self._backend, {"Bucket": self._backend.bucket, "Key": self._temp_key}
        with _s3_errors("completing multipart upload"):
            parts = {"Parts": self._parts}
            backend.client.complete_multipart_upload(**temp, UploadId=self._upload_id, MultipartUpload=parts)
        self._upload_id, self._temp_completed = None, True
        key = backend.blob_key(digests.sha256)
        if not backend.key_exists(key):
            config = TransferConfig(
                multipart_threshold=COPY_MULTIPART_THRESHOLD, multipart_chunksize=COPY_PART_SIZE
            )
            with _s3_errors(f"copy of blob {digests.sha256} to its final key"):
                backend.client.copy(temp, backend.bucket, key, Config=config)
        try:
            self._discard(None)
        except StorageError as exc:  # the blob is published; open() removes the leftover later
            log.warning("could not delete %s: %s", self._temp_key, exc)
        return digests

    async def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._pending is None:
            return  # nothing ever reached S3
        try:
            await asyncio.wrap_future(self._backend.submit(self._discard, self._pending))
        except (StorageError, RuntimeError) as exc:
            # Never mask the error that made the caller cancel; open() of any process
            # sharing the bucket removes what is left after an hour.
            log.warning("could not discard temporary upload %s: %s", self._temp_key, exc)

    def _discard(self, pending: concurrent.futures.Future[Any] | None) -> None:
        if pending is not None:
            concurrent.futures.wait([pending])
        client, bucket = self._backend.client, self._backend.bucket
        if self._upload_id is not None:
            with _s3_errors("abort of multipart upload"):
                client.abort_multipart_upload(Bucket=bucket, Key=self._temp_key, UploadId=self._upload_id)
            self._upload_id = None
        if self._temp_completed:
            with _s3_errors("delete of temporary object"):
                client.delete_object(Bucket=bucket, Key=self._temp_key)
            self._temp_completed = False


class S3Backend(StorageBackend):
    """Content-addressed blobs in one bucket, shareable by any number of edge processes."""

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
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if addressing_style not in ("path", "virtual", "auto"):
            raise ValueError("addressing_style must be path, virtual or auto")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
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
                # standard mode retries 500/503, throttling and dropped connections with backoff
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max_workers + 10,  # managed copies add their own threads
                tcp_keepalive=True,
            ),
        }
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="s3-blobs")
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
            if _code(exc) in _NO_BUCKET:
                raise StorageError(f"{where} does not exist; create it first") from None
            if _code(exc) in ("403", "AccessDenied"):
                raise StorageError(f"{where}: access denied; check the credentials") from None
            raise StorageError(f"{where} cannot be opened: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{where} is unreachable: {exc}") from exc

    def _remove_stale(self) -> None:
        """Abort uploads and delete temp objects that crashed writers left behind.

        Other processes may share the bucket and be writing right now, so only
        what is older than an hour goes.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=STALE_UPLOAD_SECONDS)
        client, bucket, temp = self._client, self.bucket, f"{self.prefix}tmp/"
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=temp):
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

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def writer(self, *, all_digests: bool = True) -> BlobWriter:
        self.client  # noqa: B018 - fail now, not at the first full part
        return S3Writer(self, all_digests)

    def key_exists(self, key: str) -> bool:
        with _s3_errors(f"head of {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    def _head(self, sha256: str) -> BlobInfo:
        with _s3_errors(f"head of blob {sha256}", sha256):
            head = self.client.head_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        modified = head["LastModified"].astimezone(UTC)
        return BlobInfo(sha256=sha256, size=head["ContentLength"], modified=modified)

    async def stat(self, sha256: str) -> BlobInfo:
        check_sha256(sha256)
        return await self._call(self._head, sha256)

    async def read(self, sha256: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
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
        with _s3_errors(f"read of blob {sha256}", sha256):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{last}")
            except ClientError as exc:
                if _code(exc) not in ("InvalidRange", "416"):
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

    async def _stream(self, body: Any, remaining: int) -> AsyncIterator[bytes]:
        try:
            while remaining > 0:
                chunk: bytes = await self._call(_guarded, "read", body.read, min(READ_CHUNK, remaining))
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
        with _s3_errors(f"delete of blob {sha256}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.blob_key(sha256))

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        paginator = await self._call(self.client.get_paginator, "list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"))  # lazy: no I/O
        while (page := await self._call(_guarded, "list", next, pages, None)) is not None:
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
        url: str = await self._call(_guarded, "presigning", sign, "get_object", params, expires_in)
        return url
