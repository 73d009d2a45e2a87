"""Staged chunks in the bucket, under ``{prefix}staging/``, and publishing them as one blob.

A blob made of chunks is published by a multipart upload to its final key whose parts are
copied inside S3 (UploadPartCopy) from the chunks, so its bytes do not travel through the edge
again; a chunk too small to be a part (S3 wants 5 MiB for every part but the last: a resumed
upload leaves one at each dropped connection) is read and sent together with its neighbours
instead, a part at a time. One chunk alone is copied with CopyObject. Every read and copy of a
chunk names the chunk's ETag (``IfMatch``, ``CopySourceIfMatch``): S3 refuses it if the object
changed since it was stored, so only the bytes the edge hashed reach the blob.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from . import s3_parallel
from .base import READ_CHUNK
from .errors import DigestMismatch, StorageError
from .s3_common import MAX_PARTS, MIN_PART_SIZE, NOT_FOUND_CODES, OCTETS, error_code, s3_errors
from .staging_area import StagedChunk, StagingArea

if TYPE_CHECKING:
    from .s3 import S3Backend

_CHANGED = frozenset({"PreconditionFailed", "412", *NOT_FOUND_CODES})


@dataclass(frozen=True)
class Piece:
    """Bytes ``start`` to ``start + length`` of a chunk."""

    chunk: StagedChunk
    start: int
    length: int


@dataclass(frozen=True)
class Part:
    """A part of the published blob: one piece copied inside S3 (``copied``), or pieces sent."""

    pieces: tuple[Piece, ...]
    copied: bool

    @property
    def size(self) -> int:
        return sum(p.length for p in self.pieces)


def plan_parts(chunks: Sequence[StagedChunk], part_size: int, min_part: int = MIN_PART_SIZE) -> list[Part]:
    """The parts that make the chunks one object: a chunk's rest is copied when it can be a part
    on its own (``min_part`` bytes, or the blob's tail) and nothing read waits before it; other
    bytes gather into sent parts of ``part_size`` (the last part may be shorter)."""
    total = sum(c.size for c in chunks)
    parts: list[Part] = []
    pending: list[Piece] = []
    gathered = done = 0
    for chunk in chunks:
        at = 0
        while at < chunk.size:
            rest = chunk.size - at
            if not pending and (rest >= min_part or done + rest == total):
                parts.append(Part((Piece(chunk, at, rest),), copied=True))
                take = rest
            else:
                take = min(rest, part_size - gathered)
                pending.append(Piece(chunk, at, take))
                gathered += take
                if gathered == part_size or done + take == total:
                    parts.append(Part(tuple(pending), copied=False))
                    pending, gathered = [], 0
            at += take
            done += take
    return parts


@contextmanager
def chunk_errors(chunk: StagedChunk) -> Iterator[None]:
    """A chunk gone or changed since it was stored is a DigestMismatch; other failures StorageErrors."""
    with s3_errors(f"use of staged chunk {chunk.name}"):
        try:
            yield
        except ClientError as exc:
            if error_code(exc) in _CHANGED:
                raise DigestMismatch(f"staged chunk {chunk.name}", chunk.etag, "bytes changed or gone") from None
            raise


class S3StagingArea(StagingArea):
    def __init__(self, backend: S3Backend) -> None:
        self.backend = backend
        self.part_size = backend.part_size
        self.root = f"{backend.prefix}staging/"

    def key(self, name: str) -> str:
        return self.root + name

    async def put(self, name: str, body: bytes | bytearray) -> StagedChunk:
        answer = await s3_parallel.run_all(self.backend, [partial(self._put, name, body)])
        return answer[0]

    def _put(self, name: str, body: bytes | bytearray) -> StagedChunk:
        with s3_errors(f"put of staged chunk {name}"):
            answer = self.backend.client.put_object(
                Bucket=self.backend.bucket, Key=self.key(name), Body=body, ContentType=OCTETS
            )
        return StagedChunk(name, str(answer["ETag"]), len(body))

    async def read_into(self, chunk: StagedChunk, consume: Callable[[bytes], None]) -> None:
        await asyncio.wrap_future(self.backend.submit(self._read_into, chunk, consume))

    def _read_into(self, chunk: StagedChunk, consume: Callable[[bytes], None]) -> None:
        with chunk_errors(chunk):
            body = self._get(chunk, 0, chunk.size)
            try:
                while piece := body.read(READ_CHUNK):
                    consume(piece)
            finally:
                body.close()

    def _get(self, chunk: StagedChunk, start: int, length: int) -> Any:
        if length == 0:
            return _Empty()
        answer = self.backend.client.get_object(
            Bucket=self.backend.bucket,
            Key=self.key(chunk.name),
            IfMatch=chunk.etag,
            Range=f"bytes={start}-{start + length - 1}",
        )
        return answer["Body"]

    async def publish(self, sha256: str, chunks: Sequence[StagedChunk]) -> None:
        parts = plan_parts(chunks, self.part_size)
        if len(parts) > MAX_PARTS:
            raise StorageError(f"blob {sha256} would take more than {MAX_PARTS} parts; raise part_size")
        target = self.backend.blob_key(sha256)
        if len(parts) <= 1:  # one copy, or one small body (nothing at all: an empty blob)
            await s3_parallel.run_all(self.backend, [partial(self._whole, sha256, parts[0] if parts else None)])
            return
        upload_id = await s3_parallel.one(self.backend, partial(s3_parallel.create_upload, self.backend, target))
        try:
            jobs = [partial(self._part, target, upload_id, number, part) for number, part in enumerate(parts, 1)]
            done = await s3_parallel.run_all(self.backend, jobs)
            await s3_parallel.one(self.backend, partial(s3_parallel.complete, self.backend, target, upload_id, done))
        except BaseException:
            await s3_parallel.abandon(self.backend, target, upload_id)
            raise

    def _whole(self, sha256: str, part: Part | None) -> None:
        """A blob of one part: copied from its one chunk, or sent with its SHA-256 for S3 to check."""
        if part is None or not part.copied:
            s3_parallel.put_blob(self.backend, sha256, b"" if part is None else self._gather(part))
            return
        chunk = part.pieces[0].chunk
        with chunk_errors(chunk):
            self.backend.client.copy_object(
                Bucket=self.backend.bucket,
                Key=self.backend.blob_key(sha256),
                CopySource={"Bucket": self.backend.bucket, "Key": self.key(chunk.name)},
                CopySourceIfMatch=chunk.etag,
                ContentType=OCTETS,
                MetadataDirective="REPLACE",
            )

    def _gather(self, part: Part) -> bytes:
        """A sent part's bytes, read from its chunks: one part in memory per write slot."""
        out = bytearray()
        for piece in part.pieces:
            with chunk_errors(piece.chunk):
                body = self._get(piece.chunk, piece.start, piece.length)
                try:
                    out += body.read()
                finally:
                    body.close()
        if len(out) != part.size:
            raise DigestMismatch("staged chunk size", part.size, len(out))
        return bytes(out)

    def _part(self, target: str, upload_id: str, number: int, part: Part) -> dict[str, Any]:
        common = {"Bucket": self.backend.bucket, "Key": target, "UploadId": upload_id, "PartNumber": number}
        if not part.copied:
            body = self._gather(part)
            with s3_errors("multipart upload of a staged blob"):
                return {"PartNumber": number, "ETag": self.backend.client.upload_part(Body=body, **common)["ETag"]}
        piece = part.pieces[0]
        with chunk_errors(piece.chunk):
            answer = self.backend.client.upload_part_copy(
                CopySource={"Bucket": self.backend.bucket, "Key": self.key(piece.chunk.name)},
                CopySourceIfMatch=piece.chunk.etag,
                CopySourceRange=f"bytes={piece.start}-{piece.start + piece.length - 1}",
                **common,
            )
        return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

    async def delete(self, prefix: str) -> None:
        await asyncio.wrap_future(self.backend.submit(self._delete, prefix))

    def _delete(self, prefix: str) -> None:
        client, bucket = self.backend.client, self.backend.bucket
        with s3_errors(f"delete of staged chunks {prefix}"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.key(prefix)):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]  # a page: 1,000 at most
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    async def groups(self) -> set[str]:
        return await asyncio.wrap_future(self.backend.submit(self._groups))

    def _groups(self) -> set[str]:
        """From a listing of every chunk: a listing by delimiter would also name folders some S3
        servers keep after their last object is deleted (SeaweedFS)."""
        found: set[str] = set()
        with s3_errors("listing of staged chunks"):
            pages = self.backend.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.backend.bucket, Prefix=self.root
            )
            for page in pages:
                found.update(obj["Key"][len(self.root) :].split("/", 1)[0] for obj in page.get("Contents", []))
        return found


class _Empty:
    """The body of a read of nothing (S3 has no empty Range)."""

    def read(self, _size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        return None
