"""One attempt of one job: push a signed bundle to an edge (start, upload, commit, verify), or delete it there.

Only the blobs the edge says it is missing cross the wire, streamed from the storage
backend. A large blob interrupted mid-way resumes from the last byte the edge holds.
Progress is counted per file as blobs land; blobs the edge already held count as
distributed at once. Nothing is held per file of the bundle: the missing blobs are looked
up in the database and sent a page at a time, and the verification reads the bundle's
files a page at a time.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage_backends import BlobNotFound, StorageBackend, StorageError, open_in_thread
from wire.batch import BATCH_BLOB_MAX, BATCH_MAX_BLOBS, body_length, head_line
from wire.protocol import Removal, TransactionState
from wire.published import PublishedDigest

from .bundle_store import BundleArtifact, BundleBlob, BundleStore
from .jobs import Job
from .sendfile import FileWindow
from .transfer import (
    EdgeCallError,
    EdgeClient,
    EdgeGarbage,
    EdgeRefused,
    EdgeServerError,
    EdgeUnreachable,
    ManifestSource,
    RangeMismatch,
)

# Blobs this large ask the edge how much it holds before sending (a resume after a restart).
RESUME_FROM = 4 * 1024 * 1024
BLOB_TRIES = 4
# Bytes of small blobs sent in one batch: few requests, yet several batches to share among the
# upload slots, and a failed batch costs little to send again.
BATCH_BYTES = 2 * 1024 * 1024
# Bytes of a batch read from storage at once: few trips to storage, little held in memory.
READ_GROUP = 256 * 1024
# Missing blobs looked up in the database and sent as one group: bounds what a push holds.
MISSING_PAGE = 10_000


class SourceMissing(EdgeCallError):
    """A blob of the bundle is gone from this service's own storage, or damaged there."""


class NotVerified(EdgeCallError):
    """After its commit, the edge does not hold exactly the manifest."""


@dataclass
class Progress:
    """A running job's counters; the runner writes them to the database now and then. Counters only,
    whatever the bundle's size: what a blob adds when it lands comes with the page of missing
    blobs it was sent in (``BundleBlob``)."""

    total_files: int
    total_bytes: int
    distributed_files: int = 0
    distributed_bytes: int = 0
    sent_files: int = 0
    sent_bytes: int = 0
    transaction_id: str | None = None
    uploading: dict[str, str] = field(default_factory=dict)  # sha256 -> a target path, while it goes out
    changes: int = 0
    # told of every blob byte that goes out (the service's per-edge traffic counter)
    on_sent: Callable[[int], None] | None = None

    @classmethod
    def of(cls, job: Job) -> Progress:
        return cls(job.total_files, job.total_bytes, sent_files=job.sent_files, sent_bytes=job.sent_bytes)

    def held(self, missing_files: int, missing_bytes: int) -> None:
        """The edge lacks blobs listed by ``missing_files`` files of ``missing_bytes``: it holds the rest."""
        self.distributed_files = self.total_files - missing_files
        self.distributed_bytes = self.total_bytes - missing_bytes
        self.changes += 1

    def landed(self, blob: BundleBlob, *, sent: bool) -> None:
        """A blob is on the edge; a blob no file lists (the bundle's SBOM) counts its bytes, no file."""
        self.distributed_files += blob.files
        self.distributed_bytes += blob.bytes
        self.sent_files += sent and blob.files > 0
        self.changes += 1

    def on_bytes(self, n: int) -> None:
        self.sent_bytes += n
        self.changes += 1
        if self.on_sent is not None:
            self.on_sent(n)

    def fields(self) -> dict[str, Any]:
        return {
            "distributed_files": self.distributed_files,
            "distributed_bytes": self.distributed_bytes,
            "sent_files": self.sent_files,
            "sent_bytes": self.sent_bytes,
        }

    def in_flight(self) -> list[str]:
        return sorted(self.uploading.values())


@dataclass
class Push:
    client: EdgeClient
    storage: StorageBackend
    manifest: ManifestSource
    progress: Progress
    blob_concurrency: int
    on_started: Callable[[str], Awaitable[Any]]
    bundle: BundleView  # the pushed bundle's rows, read a page at a time
    # the blobs of the page of missing ones being sent
    _blobs: dict[str, BundleBlob] = field(default_factory=dict, init=False)

    async def run(self) -> None:
        started = await self.client.start(self.manifest)
        tx = started["transaction_id"]
        self.progress.transaction_id = tx
        await self.on_started(tx)
        # committed already, the edge still names blobs its store lost: a repair
        await self.upload_missing(tx, functools.partial(self.client.missing, tx, started))
        try:
            committed = await self.client.commit(tx)
        except EdgeRefused as exc:
            if exc.status != 409:
                raise
            # blobs went missing on the edge between upload and commit: start again (bounded by the runner)
            raise EdgeServerError(f"{exc.message}; starting the transaction again", 409) from None
        if committed["state"] != TransactionState.COMMITTED:
            raise EdgeGarbage(f"edge {self.client.edge.name} answered commit with state {committed['state']!r}")
        await self.verify(tx)

    async def upload_missing(self, tx: str, missing: Callable[[], AsyncIterator[list[str]]]) -> None:
        """Send the blobs the edge lacks, read from it a page at a time (``missing()``, asked twice;
        never every name at once), ``MISSING_PAGE`` at a time, each page with what the bundle lists
        of its blobs read from the database: first a pass that counts what the edge already holds
        (and refuses a blob the bundle does not list), then one that sends."""
        missing_files = missing_bytes = 0
        async for page in self._gathered(missing()):
            blobs = await self.bundle.blobs(page)
            if strangers := [m for m in page if m not in blobs]:
                raise EdgeGarbage(f"edge {self.client.edge.name} asks for blobs not in the bundle: {strangers[:3]}")
            missing_files += sum(b.files for b in blobs.values())
            missing_bytes += sum(b.bytes for b in blobs.values())
        self.progress.held(missing_files, missing_bytes)
        async for page in self._gathered(missing()):
            self._blobs = await self.bundle.blobs(page)
            await self.upload_all(tx, page, {s: b.size for s, b in self._blobs.items()})
        self._blobs = {}

    async def _gathered(self, pages: AsyncIterator[list[str]]) -> AsyncIterator[list[str]]:
        """The edge's pages of missing blobs, checked, in pages of ``MISSING_PAGE``."""
        gathered: list[str] = []
        async for page in pages:
            if not all(isinstance(m, str) for m in page):
                raise EdgeGarbage(f"edge {self.client.edge.name} names missing blobs that are not sha256 strings")
            gathered += page
            while len(gathered) >= MISSING_PAGE:
                yield gathered[:MISSING_PAGE]
                gathered = gathered[MISSING_PAGE:]
        if gathered:
            yield gathered

    def _target(self, sha: str) -> str:
        blob = self._blobs.get(sha)
        return blob.target if blob is not None else sha

    def _landed(self, sha: str, *, sent: bool) -> None:
        blob = self._blobs.get(sha)
        if blob is not None:
            self.progress.landed(blob, sent=sent)

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

        slots = min(self.blob_concurrency, len(units))
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
            self.progress.uploading[sha] = self._target(sha)
            try:
                if offset < size or size == 0:
                    await self._send(tx, sha, size, offset)
            finally:
                self.progress.uploading.pop(sha, None)
        except EdgeRefused as exc:
            if exc.status != 409:
                raise
            # the transaction is no longer open there (expired, aborted): start it again, bounded by the runner
            raise EdgeServerError(f"{exc.message}; starting the transaction again", 409) from None
        self._landed(sha, sent=offset < size or size == 0)

    async def send_batch(self, tx: str, shas: tuple[str, ...], sizes: dict[str, int]) -> None:
        """One request for many small blobs (docs/transactions.md); a failed one is sent again whole."""
        head = head_line(shas)
        length = body_length(shas, sizes)
        for sha in shas:
            self.progress.uploading[sha] = self._target(sha)
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
                self.progress.uploading.pop(sha, None)
        for sha in shas:
            self._landed(sha, sent=True)

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
                vanished.append(f"blob {exc.sha256} of the bundle is missing from the service's storage")
                raise
            for sha, data in zip(group, found, strict=True):
                if len(data) != sizes[sha]:
                    vanished.append(
                        f"blob {sha} in the service's storage holds {len(data)} bytes, not {sizes[sha]}: damaged"
                    )
                    raise StorageError(vanished[-1])
            body = b"".join(found)
            self.progress.on_bytes(len(body))
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
                raise SourceMissing(f"blob {sha} of the bundle is missing from the service's storage") from None
            try:
                held = os.fstat(file.fileno()).st_size
                if held != size:
                    raise SourceMissing(f"blob {sha} in the service's storage holds {held} bytes, not {size}: damaged")
                window = FileWindow(file, offset, size - offset, self.progress.on_bytes)
                await self.client.put_blob(tx, sha, size, offset, window)
            finally:
                file.close()
            return
        try:
            stream = await self.storage.read(sha, offset)
        except BlobNotFound:
            raise SourceMissing(f"blob {sha} of the bundle is missing from the service's storage") from None
        try:
            try:
                # started now, so aclose() below runs the stream's own clean-up even if nothing is sent
                first = await anext(stream)
            except StopAsyncIteration:
                first = b""
            await self.client.put_blob(tx, sha, size, offset, _counted(first, stream, self.progress.on_bytes))
        finally:
            await stream.aclose()

    async def verify(self, tx: str) -> None:
        """Completed means verified: the edge says committed, its store lacks no blob of the
        manifest, and it publishes exactly the manifest's files, as the digest over every
        path, sha256 and size says (wire/published.py). A difference fails the job: the
        protocol sent everything and the edge committed it, so something outside the protocol
        changed the edge, and pushing again would not make it right."""
        status = await self.client.status(tx)
        edge = self.client.edge.name
        missing = status.get("missing") or []
        if status["state"] != TransactionState.COMMITTED or missing:
            raise NotVerified(
                f"edge {edge} reports transaction {tx} as {status['state']} after commit"
                f" (missing {len(missing)} blobs{': ' + ', '.join(map(str, missing[:3])) if missing else ''})"
            )
        published = status.get("published")
        if not isinstance(published, dict) or not all(
            isinstance(published.get(k), kind) for k, kind in (("files", int), ("bytes", int), ("sha256", str))
        ):
            raise EdgeGarbage(f"edge {edge} answered the status of committed transaction {tx} without 'published'")
        digest = PublishedDigest()
        async for page in self.bundle.artifact_pages():
            digest.add((a.target, a.sha256, a.size) for a in page)
        files, size, expected = digest.files, digest.bytes, digest.hexdigest()
        if published["sha256"] != expected:
            raise NotVerified(
                f"verification failed on edge {edge}: it publishes {published['files']} files"
                f" ({published['bytes']} bytes) of transaction {tx}, digest {published['sha256']}, where the"
                f" manifest lists {files} files ({size} bytes), digest"
                f" {expected}: its catalog was changed outside the protocol"
            )


@dataclass(frozen=True)
class BundleView:
    """What a push reads of its bundle, from the database, a page at a time."""

    store: BundleStore
    name: str
    version: str

    async def blobs(self, sha256s: list[str]) -> dict[str, BundleBlob]:
        return await self.store.bundle_blobs(self.name, self.version, sha256s)

    def artifact_pages(self) -> AsyncIterator[list[BundleArtifact]]:
        return self.store.artifact_pages(self.name, self.version)


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


async def delete_from_edge(
    client: EdgeClient, name: str, version: str, on_step: Callable[[Removal], Awaitable[Any]]
) -> None:
    """Remove a bundle version from an edge and check it is gone (already gone is success).

    The edge removes a bounded part of the bundle per request and answers how far it got
    (``on_step`` is told); the next request goes on from there, whether it comes next in this
    loop or from a later attempt after an error or a restart, so any request may be repeated."""
    before = -1
    while (step := await client.remove_bundle(name, version)) is not None:
        if step.removed <= before:
            raise EdgeGarbage(
                f"edge {client.edge.name} answered a removal step of {name}/{version} that removed nothing"
                f" ({step.removed} of {step.total} files, as before)"
            )
        before = step.removed
        await on_step(step)
    for b in await client.bundles():
        if isinstance(b, dict) and b.get("name") == name and b.get("version") == version:
            raise EdgeGarbage(f"edge {client.edge.name} still lists {name}/{version} after deleting it")
