"""The blob store contract that every backend implements.

Blobs are content-addressed: a blob's name is the SHA-256 of its bytes. A writer
hashes while it writes and publishes atomically on commit, so a blob is either
whole or absent; nothing outside this package knows how a backend does that.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from .errors import BlobNotFound, BlobsNotDeleted, DigestMismatch, InvalidDigest, InvalidOffset, StorageError
from .staging_area import StagingArea

# A megabyte per read: fewer thread hand-offs per byte streamed, while memory per stream stays flat.
READ_CHUNK = 1024 * 1024
# Stats in flight at once in the default ``sizes`` (HEAD requests, on S3).
SIZES_CONCURRENCY = 32
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str) -> str:
    """Refuse anything that is not a lowercase hex SHA-256 before it becomes a path or key."""
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise InvalidDigest(value)
    return value


def content_disposition(filename: str) -> str:
    """``attachment`` with an RFC 6266 quoted ASCII name, plus ``filename*`` when that loses anything."""
    name = "".join(ch for ch in filename if ch >= " " and ch != "\x7f")  # nothing that could split a header
    quoted = "".join(ch if ch.isascii() else "_" for ch in name).replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{quoted}"'
    if quoted != name:  # user agents that read filename* get the exact name
        value += "; filename*=UTF-8''" + quote(name, safe="")
    return value


@dataclass(frozen=True)
class Digests:
    """What a writer measured. sha1 and md5 are None when the writer was asked for sha256 only."""

    size: int
    sha256: str
    sha1: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    modified: datetime


class MultiHasher:
    """SHA-256 always, SHA-1 and MD5 on request: the hashing floor of every ingest.

    hashlib releases the GIL on large buffers, so backends feed it from a worker
    thread in chunks of a megabyte or so.
    """

    def __init__(self, all_digests: bool = True) -> None:
        self._sha256 = hashlib.sha256()
        self._extra = {"sha1": hashlib.sha1(), "md5": hashlib.md5()} if all_digests else {}
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        for h in self._extra.values():
            h.update(data)
        self.size += len(data)

    def digests(self) -> Digests:
        extra = {name: h.hexdigest() for name, h in self._extra.items()}
        return Digests(size=self.size, sha256=self._sha256.hexdigest(), **extra)


def verify_digests(got: Digests, expected: Mapping[str, str] | None, expected_size: int | None) -> None:
    """Raise DigestMismatch for the first expectation the measured digests break.

    Expected names are sha256, sha1 and md5; comparison ignores case because
    clients send upper-case hex.
    """
    if expected_size is not None and got.size != expected_size:
        raise DigestMismatch("size", expected_size, got.size)
    for name, want in (expected or {}).items():
        have = getattr(got, name)
        if have is None:
            raise ValueError(f"writer did not compute {name}")
        if have != want.lower():
            raise DigestMismatch(name, want, have)


def check_range(sha256: str, size: int, offset: int, length: int | None) -> int:
    """Validate a read window against a blob's size and answer how many bytes it spans."""
    if offset < 0 or offset > size or (length is not None and length < 0):
        raise InvalidOffset(sha256, offset, size)
    remaining = size - offset
    return remaining if length is None else min(length, remaining)


class BlobWriter(ABC):
    """A blob being written. Readers never see it before ``commit`` returns.

    Use as an async context manager: leaving the block without a commit cancels,
    so a client that disconnects mid-upload leaves nothing behind.
    """

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes accepted so far."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append bytes. May buffer; the caller must not reuse ``data`` afterwards."""

    @abstractmethod
    async def commit(self, *, expected: Mapping[str, str] | None = None, expected_size: int | None = None) -> Digests:
        """Publish the blob under its SHA-256 and answer its digests.

        If any expected digest or the size differs, raises DigestMismatch and the
        blob is not published (the writer is cancelled). Committing bytes that are
        already stored is a success that stores nothing new.
        """

    @abstractmethod
    async def cancel(self) -> None:
        """Discard everything written. Safe to call twice or after commit (no-op)."""

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()


class StorageBackend(ABC):
    """Async blob store. Every method that takes a sha256 validates it first."""

    # True where every blob a write call stored (``writer``, ``write_many``, ``adopt``) is durable
    # under its name once the call returns, with no ``sync()`` to wait for. A caller may then
    # record the blob as held right away and trust that record later instead of asking the store
    # again (an edge asks an S3 bucket nothing before committing blobs it stored itself).
    durable_on_write: bool = False
    # True where ``presigned_url`` can answer a URL; where False it always answers None, which a
    # download of a small file learns without awaiting it.
    presigns: bool = False

    @abstractmethod
    async def open(self) -> None:
        """Prepare the store (create directories, check the bucket). Called once at start."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and worker threads."""

    async def check(self) -> None:
        """Raise StorageError unless the store answers right now (a readiness check): cheap,
        writes nothing. This default asks for a blob that is never there."""
        await self.exists("0" * 64)

    @abstractmethod
    async def writer(self, *, all_digests: bool = True) -> BlobWriter:
        """Start a new blob. ``all_digests=False`` computes SHA-256 only (bundle blobs)."""

    @abstractmethod
    async def stat(self, sha256: str) -> BlobInfo:
        """Size and modification time; BlobNotFound if absent."""

    async def exists(self, sha256: str) -> bool:
        try:
            await self.stat(sha256)
        except BlobNotFound:
            return False
        return True

    async def sizes(self, sha256s: Sequence[str]) -> dict[str, int]:
        """The size of each of these blobs the store holds; those it lacks are left out.

        A bundle's commit asks this of every blob it names, so one call for many lets a
        backend answer cheaply (the local one stats them all in one worker-thread trip).
        This default stats ``SIZES_CONCURRENCY`` at a time (HEADs in flight, on S3).
        """
        for sha256 in sha256s:
            check_sha256(sha256)
        limit = asyncio.Semaphore(SIZES_CONCURRENCY)

        async def size(sha256: str) -> int | None:
            async with limit:
                try:
                    return (await self.stat(sha256)).size
                except BlobNotFound:
                    return None

        found = await asyncio.gather(*(size(s) for s in sha256s))
        return {s: n for s, n in zip(sha256s, found, strict=True) if n is not None}

    @abstractmethod
    async def read(self, sha256: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        """Open a byte window for streaming (an async generator: ``aclose()`` it when stopping early).

        Raises BlobNotFound or InvalidOffset *here*, before any byte is produced,
        so an HTTP handler can still answer 404/416 cleanly.
        """

    async def read_many(self, sha256s: Sequence[str]) -> list[bytes]:
        """The whole bytes of each of a few small blobs, in order; BlobNotFound for one that is absent.

        For small blobs going out together (a batch to an edge): one call lets a backend fetch
        them in one trip (the local one reads them all in one worker-thread trip, where a
        stream per blob costs two). All of it is held in memory, so the caller keeps the group
        small. This default reads them one by one.
        """
        found = []
        for sha256 in sha256s:
            stream = await self.read(sha256)
            try:
                found.append(b"".join([chunk async for chunk in stream]))
            finally:
                await stream.aclose()
        return found

    @abstractmethod
    async def delete(self, sha256: str) -> None:
        """Remove a blob; BlobNotFound if it is not there."""

    async def delete_many(self, sha256s: Sequence[str]) -> None:
        """Remove these blobs; those that are not there are skipped. One call for many lets a
        backend batch its work (a garbage collection deletes a page of blobs at a time); this
        default deletes them one by one. A name that is not a digest is refused (InvalidDigest)
        before any is deleted. Once every blob is tried, those that could not be deleted are
        named by a BlobsNotDeleted, so the caller can try them again."""
        for sha256 in sha256s:
            check_sha256(sha256)
        failed: list[str] = []
        reason = ""
        for sha256 in sha256s:
            try:
                await self.delete(sha256)
            except BlobNotFound:
                continue
            except StorageError as exc:
                failed.append(sha256)
                reason = str(exc)
        if failed:
            raise BlobsNotDeleted(failed, reason)

    @abstractmethod
    def list(self) -> AsyncGenerator[str, None]:
        """Every committed blob's sha256, in no particular order."""

    @abstractmethod
    async def quarantine(self, sha256: str) -> str:
        """Move a blob whose bytes do not match its name out of the store, durably, into a
        quarantine area kept apart for an operator to look at; answer where it went (a path
        or a key). Afterwards the blob is absent (``exists``, ``read``, ``list``), and writing
        its right bytes again publishes it anew. Each quarantined copy is kept, none replaced.
        BlobNotFound if the store does not hold it."""

    async def adopt(self, path: Path, sha256: str, size: int) -> bool:
        """Move a local file whose sha256 the caller has verified into the store, durably.

        Saves a second copy and hash of bytes that already sit complete on local disk
        (an edge's staged upload). True: the blob is published under ``sha256`` (or was
        already stored, which is kept) and ``path`` is gone. False: this backend cannot
        take the file (another filesystem, a remote store) and ``path`` is untouched, so
        the caller streams it through ``writer()`` instead. A file whose size is not
        ``size`` raises DigestMismatch and publishes nothing.
        """
        return False

    async def write_many(self, blobs: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        """Store small blobs held in memory, each under its sha256, which is checked here.

        A blob whose bytes hash to something else raises DigestMismatch; the blobs before
        it stay stored (they are right, and unreferenced until an index entry names them),
        the ones after it are not stored. A store that fails part way raises StorageError;
        each blob is then whole or absent, and which of them were stored is not said.
        One call for many blobs lets a backend batch its work (one worker thread, one flush
        of the disk for all, or requests in parallel); this default stores them one by one
        through ``writer()``.

        A stored blob is whole, even after a crash; its name may still need ``sync()`` to
        survive one, which is called before an index entry may name it.
        """
        for sha256, chunks in blobs:
            async with await self.writer(all_digests=False) as writer:
                for chunk in chunks:
                    await writer.write(chunk)
                await writer.commit(expected={"sha256": sha256})

    async def sync(self) -> None:
        """Make the names of every blob stored so far durable (see ``write_many``); where every
        write is durable on its own, nothing is left to do."""
        return None

    def staging_area(self) -> StagingArea | None:
        """Where blobs still arriving keep their bytes when every process sharing this store must
        be able to continue them (storage_backends/staging_area.py); None where a process's own
        disk serves better (a local store, which no other machine shares)."""
        return None

    async def local_path(self, sha256: str) -> Path | None:
        """A file path the server may sendfile from, or None where the backend has none."""
        return None

    async def presigned_url(
        self,
        sha256: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str | None:
        """A time-limited URL a client may fetch the blob from directly, or None."""
        return None
