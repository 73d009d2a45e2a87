"""Streaming S3 uploads: one part buffered at a time, published only when whole and verified."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from .base import BlobWriter, Digests, MultiHasher, verify_digests
from .errors import StorageError
from .s3_common import COPY_MULTIPART_THRESHOLD, COPY_PART_SIZE, MAX_PARTS, OCTETS, T, s3_errors
from .s3_parallel import put_blob

if TYPE_CHECKING:
    from .s3 import S3Backend

log = logging.getLogger(__name__)


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
        with s3_errors("multipart upload"):
            if self._upload_id is None:
                created = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=OCTETS)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            part = client.upload_part(Bucket=bucket, Key=key, UploadId=self._upload_id, PartNumber=number, Body=chunk)
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    async def commit(self, *, expected: Mapping[str, str] | None = None, expected_size: int | None = None) -> Digests:
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
        if not self._backend.key_exists(self._backend.blob_key(digests.sha256)):
            put_blob(self._backend, digests.sha256, chunk)
        return digests

    def _finish_multipart(self, expected: Mapping[str, str] | None, expected_size: int | None) -> Digests:
        self._send_part(self._take())
        digests = self._hasher.digests()
        verify_digests(digests, expected, expected_size)  # raising here lets commit() abort the upload
        backend, temp = self._backend, {"Bucket": self._backend.bucket, "Key": self._temp_key}
        with s3_errors("completing multipart upload"):
            parts = {"Parts": self._parts}
            backend.client.complete_multipart_upload(**temp, UploadId=self._upload_id, MultipartUpload=parts)
        self._upload_id, self._temp_completed = None, True
        key = backend.blob_key(digests.sha256)
        if not backend.key_exists(key):
            config = TransferConfig(multipart_threshold=COPY_MULTIPART_THRESHOLD, multipart_chunksize=COPY_PART_SIZE)
            with s3_errors(f"copy of blob {digests.sha256} to its final key"):
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
            with s3_errors("abort of multipart upload"):
                client.abort_multipart_upload(Bucket=bucket, Key=self._temp_key, UploadId=self._upload_id)
            self._upload_id = None
        if self._temp_completed:
            with s3_errors("delete of temporary object"):
                client.delete_object(Bucket=bucket, Key=self._temp_key)
            self._temp_completed = False
