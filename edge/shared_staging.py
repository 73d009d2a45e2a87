"""Staging in a blob store every replica shares (S3), so a blob upload outlives the replica that
received its first bytes (docs/transactions.md, "upload").

The bytes of a blob go to the store as chunks of the store's part size (a buffer's worth each,
one being stored while the next fills) and, at the end of each request, whatever is left; each
chunk is recorded in the database (edge/staged_chunks.py) once stored. The bytes received are
the recorded chunks' sizes added up: any replica answers the same, and continues from there.

A hash cannot move between processes, so a request that continues a blob reads the chunks
already stored once and hashes them before it takes new bytes; the blob is then verified over
every byte and its size exactly as on local disk, and published by copying its chunks inside
the store (storage_backends/staging_area.py), which refuses a chunk changed since it was stored.

Two requests never append to one blob at once: uploads hold the blob's lock, which the database
gives every replica (edge/uploads.py), and a chunk is recorded only where the recorded bytes
end (``StagedChunks.add``), so a stray writer is refused rather than interleaved.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from repository.db import Database
from storage_backends import DigestMismatch, StagingArea, StorageBackend

from .receiving import ResumeMismatch
from .staged_chunks import StagedChunks
from .staging import StagedBytes, Staging

log = logging.getLogger(__name__)

# Chunks of one upload being stored at once, at most: each holds a buffer of the store's part size.
CHUNKS_IN_FLIGHT = 4
# Blobs whose hash a process keeps after a request that stored their chunks, for a resume that
# reaches the same process (a few hundred bytes each); a resume elsewhere reads the chunks back.
HASHES_KEPT = 256


class SharedStagedFile(StagedBytes):
    """A blob's bytes going to the shared store a chunk at a time, from a worker thread.

    A full buffer is hashed and handed to the event loop to be stored while the next one fills:
    up to ``CHUNKS_IN_FLIGHT`` chunks are stored at once (one PUT at a time would leave the link
    idle for a round trip per chunk), each recorded only once the one before it is, so the record
    never has a gap. An upload holds ``CHUNKS_IN_FLIGHT + 1`` parts of memory at most.
    """

    _buffer: bytearray | None

    def __init__(
        self,
        staging: SharedStaging,
        tx_id: str,
        sha256: str,
        start: int,
        names: list[str],
        hasher: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Continue at ``start`` bytes, after the chunks ``names`` (recorded, in order), whose
        bytes ``hasher`` has hashed."""
        self._staging, self._tx_id, self._sha256, self._loop = staging, tx_id, sha256, loop
        self._hash = hasher
        self._names = names  # of the chunks recorded, in order
        self.size = self._recorded = start
        self._capacity = staging.area.part_size
        self._buffer = bytearray(self._capacity)
        self._filled = 0
        self._free: list[bytearray] = []
        self._storing: collections.deque[tuple[concurrent.futures.Future[None], bytearray]] = collections.deque()
        self._failed = False  # a chunk could not be stored: what follows it is not kept

    def _write_buffer(self, end: int) -> None:
        self._hand_off(end)
        self._buffer = self._next_buffer()

    def _hand_off(self, end: int) -> None:
        """Hash ``buffer[:end]`` and start storing it as the blob's next chunk."""
        full = self._buffer
        assert full is not None
        with memoryview(full) as whole:
            self._hash.update(whole[:end])
        body = full if end == self._capacity else full[:end]
        previous = self._storing[-1][0] if self._storing else None
        storing = asyncio.run_coroutine_threadsafe(self._store(body, self._recorded, previous), self._loop)
        self._storing.append((storing, full))
        self._recorded += end
        self._filled = 0

    def _next_buffer(self) -> bytearray:
        if self._free:
            return self._free.pop()
        if len(self._storing) < CHUNKS_IN_FLIGHT:
            return bytearray(self._capacity)
        return self._settle_oldest()

    async def _store(self, body: bytearray, first_byte: int, previous: concurrent.futures.Future[None] | None) -> None:
        staging = self._staging
        name = f"{self._tx_id}/{self._sha256}/{first_byte:016d}-{uuid.uuid4().hex[:12]}"
        chunk = await staging.area.put(name, body)
        if previous is not None:
            await asyncio.wrap_future(previous)  # failed: this chunk stays unrecorded, freed with the blob
        if not await staging.chunks.add(self._tx_id, self._sha256, first_byte, chunk):
            # another process appended to this blob meanwhile: its bytes stand, these go
            await staging.area.delete(name)
            raise ResumeMismatch(await staging.chunks.extent(self._tx_id, self._sha256))
        self._names.append(name)

    def _settle_oldest(self) -> bytearray:
        """Wait for the oldest chunk being stored, and answer its buffer; its failure is raised
        here (and ends the upload)."""
        storing, buffer = self._storing.popleft()
        try:
            storing.result()
        except BaseException:
            self._failed = True
            raise
        return buffer

    def sha256(self) -> str:
        return str(self._hash.hexdigest())

    def close(self, *, fsync: bool = True, keep: bool = True) -> None:
        """Store what the buffer holds as a last chunk (``keep``), and wait until every chunk is
        stored and recorded, or has failed: nothing of this upload lands after it has ended.
        Every stored chunk is durable: ``fsync`` has nothing left to do."""
        try:
            if keep and self._filled and not self._failed:
                self._hand_off(self._filled)
        finally:
            self._buffer = None
            self._free.clear()
            first: BaseException | None = None
            while self._storing:
                try:
                    self._settle_oldest()
                except BaseException as exc:
                    first = first or exc
            if first is not None:
                raise first
        if keep and not self._failed:  # the hash covers exactly the chunks recorded
            names = tuple(self._names)
            self._loop.call_soon_threadsafe(self._staging.remember, self._tx_id, self._sha256, names, self._hash)


class SharedStaging(Staging):
    """``Staging`` whose blobs are kept in a shared store's staging area; manifests on their way
    in (``scratch``) stay on the local disk, being read by the request that brought them only."""

    def __init__(self, local: Staging, area: StagingArea, database: Database) -> None:
        super().__init__(local.root)
        self.area = area
        self.chunks = StagedChunks(database)
        # (transaction, blob) -> the chunks this process stored and the hash of their bytes
        self._hashes: dict[tuple[str, str], tuple[tuple[str, ...], Any]] = {}

    async def received(self, tx_id: str, sha256: str) -> int:
        return await self.chunks.extent(tx_id, sha256)

    async def open(self, tx_id: str, sha256: str, start: int) -> StagedBytes:
        """Continue a blob at ``start`` bytes (0: start over). Its chunks so far are read back and
        hashed, once, unless this process stored every one of them itself and still holds their
        hash. ValueError unless the recorded bytes end at ``start``; DigestMismatch if a chunk
        changed in the store since it was stored."""
        chunks = await self.chunks.chunks(tx_id, sha256)
        if start == 0 and chunks:  # chunks stored and never recorded go with the transaction's staging
            await self.drop(tx_id, sha256)
            chunks = []
        if (staged := sum(c.size for c in chunks)) != start:
            raise ValueError(f"blob {sha256} of transaction {tx_id} holds {staged} bytes, not {start}")
        names = [c.name for c in chunks]
        known = self._hashes.pop((tx_id, sha256), None)
        if known is not None and known[0] == tuple(names):
            hasher = known[1]
        else:
            hasher = hashlib.sha256()
            for chunk in chunks:
                await self.area.read_into(chunk, hasher.update)
        return SharedStagedFile(self, tx_id, sha256, start, names, hasher, asyncio.get_running_loop())

    def remember(self, tx_id: str, sha256: str, names: tuple[str, ...], hasher: Any) -> None:
        """Keep the hash of a blob's chunks ``names``, which this process stored, for its next resume here."""
        self._hashes[(tx_id, sha256)] = (names, hasher)
        while len(self._hashes) > HASHES_KEPT:
            del self._hashes[next(iter(self._hashes))]

    async def drop(self, tx_id: str, sha256: str) -> None:
        self._hashes.pop((tx_id, sha256), None)
        await self.chunks.drop(tx_id, sha256)
        await self.area.delete(f"{tx_id}/{sha256}/")

    async def free(self, tx_id: str) -> None:
        for key in [key for key in self._hashes if key[0] == tx_id]:
            del self._hashes[key]
        await self.chunks.free(tx_id)
        await self.area.delete(f"{tx_id}/")
        await super().free(tx_id)

    async def sweep(self, keep: Iterable[str]) -> None:
        """Local leftovers as ``Staging`` sweeps them, and the chunks of every transaction not in ``keep``."""
        keep = set(keep)
        await super().sweep(keep)
        for tx_id in (await self.chunks.transactions() | await self.area.groups()) - keep:
            log.info("removing staged chunks of transaction %s, no longer open", tx_id)
            await self.free(tx_id)

    async def move_into(self, storage: StorageBackend, tx_id: str, sha256: str, size: int) -> None:
        """Publish a complete blob, whose sha256 the caller has verified, from its chunks (copied
        inside the store: ``StagingArea.publish``), then remove them."""
        chunks = await self.chunks.chunks(tx_id, sha256)
        staged = sum(c.size for c in chunks)
        if staged != size:
            raise DigestMismatch("size", size, staged)
        await self.area.publish(sha256, chunks)
        await self.drop(tx_id, sha256)


def staging_for(local: Staging, storage: StorageBackend, database: Database) -> Staging:
    """The staging a node uses: in the blob store where every replica sharing it must reach it
    (``StorageBackend.staging_area``), else on the local disk."""
    area = storage.staging_area()
    return local if area is None else SharedStaging(local, area, database)
