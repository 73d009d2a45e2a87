"""Bytes of blobs still arriving, kept in the blob store itself (``StorageBackend.staging_area``).

A blob sent in pieces (an upload resumed after a dropped connection) is staged until it is
whole and verified. On a store that several processes on several machines share (S3), its
staging must be shared too: a resumed upload may reach another process than the one that
received its first bytes, which may be dead. So the bytes go to the store as chunks, each an
object of its own, named by the caller; the caller records where each chunk lies in the blob
(and its tag) somewhere every process reads, and hands the ordered list back to ``publish``.

A chunk's tag (``StagedChunk.etag``) names its bytes as they were stored: a read or a copy of
a chunk whose bytes changed since (edited or lost in the store) fails with DigestMismatch, so
bytes the caller hashed are the only bytes ever published.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StagedChunk:
    name: str  # the caller's name for it, unique: ``{prefix}/{anything}``
    etag: str  # the store's tag of its bytes, as stored
    size: int


class StagingArea(ABC):
    """Chunks of unfinished blobs in a shared store. Names are the caller's, ``/``-separated;
    the first segment groups chunks that go together (``names``, ``delete``)."""

    # Chunks of this size, or more, are published without their bytes passing through the caller.
    part_size: int

    @abstractmethod
    async def put(self, name: str, body: bytes | bytearray) -> StagedChunk:
        """Store ``body`` as the chunk ``name``, durably; another put of the same name replaces it."""

    @abstractmethod
    async def read_into(self, chunk: StagedChunk, consume: Callable[[bytes], None]) -> None:
        """Hand the chunk's bytes to ``consume`` in order, a bounded piece at a time, from a worker
        thread (``consume`` may hash: it runs off the event loop). DigestMismatch if the chunk is
        gone or its bytes are not those ``chunk.etag`` names."""

    @abstractmethod
    async def publish(self, sha256: str, chunks: Sequence[StagedChunk]) -> None:
        """Publish the chunks, in order, as the blob ``sha256``, whose bytes the caller verified:
        whole or not at all, copied inside the store where it can (chunks of at least
        ``part_size``), else read and written in parts; memory bounded by a part. DigestMismatch,
        and nothing published, if a chunk is gone or changed. The chunks stay: ``delete`` them."""

    @abstractmethod
    async def delete(self, prefix: str) -> None:
        """Delete every chunk whose name starts with ``prefix`` (none: nothing to do)."""

    @abstractmethod
    async def groups(self) -> set[str]:
        """The first name segment of every chunk stored (what ``delete(group + "/")`` removes)."""
