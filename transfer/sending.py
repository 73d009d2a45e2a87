"""Sending the blobs an edge says it is missing: the upload step of docs/transactions.md.

One implementation for every sender: the Distribution service pushing a bundle from its
storage, and a parent edge relaying a committed bundle from its own storage to a child
(docs/tiers.md). Blobs of at most ``BATCH_BLOB_MAX`` go in batches, larger ones alone, by
sendfile where the blob is a local file, resuming from what the edge holds after a cut.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from storage_backends import BlobNotFound, StorageBackend, StorageError, open_in_thread
from wire.batch import BATCH_BLOB_MAX, BATCH_MAX_BLOBS, body_length, head_line

from .client import EdgeCallError, EdgeClient, EdgeRefused, EdgeServerError, EdgeUnreachable, RangeMismatch
from .sendfile import FileWindow

# Blobs this large ask the edge how much it holds before sending (a resume after a restart).
RESUME_FROM = 4 * 1024 * 1024
BLOB_TRIES = 4
# Bytes of small blobs sent in one batch: few requests, yet several batches to share among the
# upload slots, and a failed batch costs little to send again.
BATCH_BYTES = 2 * 1024 * 1024
# Bytes of a batch read from storage at once: few trips to storage, little held in memory.
READ_GROUP = 256 * 1024


class SourceMissing(EdgeCallError):
    """A blob to send is gone from the sender's own storage, or damaged there."""


def _nothing(_sha: str, _sent: bool) -> None:
    return None


@dataclass
class BlobSender:
    """Sends blobs of one transaction to one edge over ``concurrency`` slots.

    ``on_bytes`` is told of every blob byte that goes out, ``on_landed`` of each blob the edge
    then holds (and whether it was sent or held already); ``uploading`` names, while a blob
    goes out, what ``target_of`` says of it (a path, for progress). ``source`` names the
    storage in errors."""

    client: EdgeClient
    storage: StorageBackend
    concurrency: int
    on_bytes: Callable[[int], None]
    on_landed: Callable[[str, bool], None] = _nothing
    target_of: Callable[[str], str] = str
    uploading: dict[str, str] = field(default_factory=dict)
    source: str = "the service's storage"

    async def upload_all(self, tx: str, missing: list[str], sizes: dict[str, int]) -> None:
        """Send ``missing`` over ``blob_concurrency`` slots: blobs of at most ``BATCH_BLOB_MAX``
        bytes in batches (one request for many), larger ones alone. Half the slots take the
        largest first and the others the smallest: large blobs, bound by bytes per second, go
        out from the start and never fill every slot, while small ones, bound by round trips and
        the edge's flushes to disk, go on beside them; a slot whose end runs dry takes from the
        other. (With one slot taking the large ones, they waited behind the batches and the
        disk idled: bench/distribute.py.)"""
        units = _groups(sorted(s for s in missing if sizes[s] <= BATCH_BLOB_MAX), sizes, BATCH_BYTES, BATCH_MAX_BLOBS)
        units += [(s,) for s in missing if sizes[s] > BATCH_BLOB_MAX]
        queue = deque(sorted(units, key=lambda u: (sum(sizes[s] for s in u), u)))

        async def worker(largest_first: bool) -> None:
            while queue:
                unit = queue.pop() if largest_first else queue.popleft()
                if sizes[unit[0]] > BATCH_BLOB_MAX:
                    await self.send_blob(tx, unit[0], sizes[unit[0]])
                else:
                    await self.send_batch(tx, unit, sizes)

        slots = min(self.concurrency, len(units))
        tasks = [asyncio.create_task(worker(i < slots // 2)) for i in range(slots)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send_blob(self, tx: str, sha: str, size: int) -> None:
        try:
            offset = await self.client.received(tx, sha) if size >= RESUME_FROM else 0
            self.uploading[sha] = self.target_of(sha)
            try:
                if offset < size or size == 0:
                    await self._send(tx, sha, size, offset)
            finally:
                self.uploading.pop(sha, None)
        except EdgeRefused as exc:
            if exc.status != 409:
                raise
            # the transaction is no longer open there (expired, aborted): start it again, bounded by the runner
            raise EdgeServerError(f"{exc.message}; starting the transaction again", 409) from None
        self.on_landed(sha, offset < size or size == 0)

    async def send_batch(self, tx: str, shas: tuple[str, ...], sizes: dict[str, int]) -> None:
        """One request for many small blobs (docs/transactions.md); a failed one is sent again whole."""
        head = head_line(shas)
        length = body_length(shas, sizes)
        for sha in shas:
            self.uploading[sha] = self.target_of(sha)
        try:
            for attempt in range(1, BLOB_TRIES + 1):
                vanished: list[str] = []
                try:
                    await self.client.put_batch(tx, length, self._batch_body(head, shas, sizes, vanished))
                    break
                except EdgeCallError as exc:
                    if vanished:
                        raise SourceMissing(vanished[0]) from None
                    if isinstance(exc, EdgeRefused) and exc.status == 409:
                        # the transaction is no longer open there: start it again, bounded by the runner
                        raise EdgeServerError(f"{exc.message}; starting the transaction again", 409) from None
                    if not exc.retryable or attempt == BLOB_TRIES:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)
        finally:
            for sha in shas:
                self.uploading.pop(sha, None)
        for sha in shas:
            self.on_landed(sha, True)

    async def _batch_body(
        self, head: bytes, shas: tuple[str, ...], sizes: dict[str, int], vanished: list[str]
    ) -> AsyncIterator[bytes]:
        """The batch's bytes, read from storage ``READ_GROUP`` bytes at a time; a blob gone from
        storage, or of another size there, is put in ``vanished`` and fails the send as a
        connection error, and the caller says why."""
        yield head  # framing, not blob bytes: not counted as sent
        for group in _groups(shas, sizes, READ_GROUP, BATCH_MAX_BLOBS):
            try:
                found = await self.storage.read_many(group)
            except BlobNotFound as exc:
                vanished.append(f"blob {exc.sha256} of the bundle is missing from {self.source}")
                raise
            for sha, data in zip(group, found, strict=True):
                if len(data) != sizes[sha]:
                    vanished.append(f"blob {sha} in {self.source} holds {len(data)} bytes, not {sizes[sha]}: damaged")
                    raise StorageError(vanished[-1])
            body = b"".join(found)
            self.on_bytes(len(body))
            yield body

    async def _send(self, tx: str, sha: str, size: int, offset: int) -> None:
        for attempt in range(1, BLOB_TRIES + 1):
            try:
                await self._put(tx, sha, size, offset)
                return
            except RangeMismatch as exc:
                if attempt == BLOB_TRIES:
                    raise
                offset = exc.received if exc.received < size else 0
            except (EdgeUnreachable, EdgeServerError):
                if attempt == BLOB_TRIES:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
                offset = await self.client.received(tx, sha)  # resume from what the edge holds
                if offset >= size:
                    return

    async def _put(self, tx: str, sha: str, size: int, offset: int) -> None:
        """Send the blob from ``offset``: with sendfile where the blob is a local file, else streamed."""
        path = await self.storage.local_path(sha)
        if path is not None:
            try:
                file = await open_in_thread(open, path, "rb")
            except FileNotFoundError:
                raise SourceMissing(f"blob {sha} of the bundle is missing from {self.source}") from None
            try:
                held = os.fstat(file.fileno()).st_size
                if held != size:
                    raise SourceMissing(f"blob {sha} in {self.source} holds {held} bytes, not {size}: damaged")
                window = FileWindow(cast(BinaryIO, file), offset, size - offset, self.on_bytes)  # opened "rb"
                await self.client.put_blob(tx, sha, size, offset, window)
            finally:
                file.close()
            return
        try:
            stream = await self.storage.read(sha, offset)
        except BlobNotFound:
            raise SourceMissing(f"blob {sha} of the bundle is missing from {self.source}") from None
        try:
            try:
                # started now, so aclose() below runs the stream's own clean-up even if nothing is sent
                first = await anext(stream)
            except StopAsyncIteration:
                first = b""
            await self.client.put_blob(tx, sha, size, offset, _counted(first, stream, self.on_bytes))
        finally:
            await stream.aclose()


def _groups(shas: Sequence[str], sizes: dict[str, int], max_bytes: int, max_count: int) -> list[tuple[str, ...]]:
    """Consecutive blobs in groups of at most ``max_bytes`` bytes (or one larger blob) and ``max_count`` blobs."""
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    size = 0
    for sha in shas:
        if current and (size + sizes[sha] > max_bytes or len(current) == max_count):
            groups.append(tuple(current))
            current, size = [], 0
        current.append(sha)
        size += sizes[sha]
    if current:
        groups.append(tuple(current))
    return groups


async def _counted(first: bytes, rest: AsyncIterator[bytes], on_bytes: Callable[[int], None]) -> AsyncIterator[bytes]:
    if first:
        on_bytes(len(first))
        yield first
    async for chunk in rest:
        on_bytes(len(chunk))
        yield chunk
