"""Blobs arriving in a transaction (docs/transactions.md, "upload"): one PUT, a batch of small
ones, or the HEAD that says where a resumed upload starts.

Each blob is staged (edge/staging.py) and checked against the manifest before it enters the
blob store; blobs of a committed transaction that its store lost are taken too (a repair),
and serve again at once. Uploads of one transaction run in parallel, each under a lock of its
own blob, and register with ``InFlight`` so that the transaction's end can stop them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from repository.artifacts import ArtifactService
from repository.errors import BadRequest, Conflict, NotFound
from storage_backends import DigestMismatch, StorageFull, os_storage_error
from storage_backends.errors import DISK_FULL_ERRNOS
from wire.batch import BatchReader, check_sizes
from wire.protocol import TransactionState as State

from .pace import PaceGuard, UploadPace, UploadTooSlow
from .raw_body import RawBody, Receivers
from .receiving import (
    BlobRefused,
    InFlight,
    ResumeMismatch,
    TransactionEnded,
    Upload,
    append_all,
    listed,
    receive_raw,
    resume_offset,
)
from .staging import Staging
from .store import EdgeStore, Transaction

if TYPE_CHECKING:
    from .transactions import Transactions

log = logging.getLogger(__name__)

# Bytes of small blobs stored with one call to the blob store: each call makes its blobs durable
# with one flush of the disk's cache, so the larger the group the fewer flushes; the group is held
# in memory, so it is bounded (a whole batch from the Distribution service fits in one).
BATCH_GROUP = 4 * 1024 * 1024


@dataclass(frozen=True)
class Batch:
    blobs: int
    size: int


@dataclass(frozen=True)
class Received:
    sha256: str
    size: int
    created: bool  # False: the edge already held it


class Uploads:
    def __init__(
        self,
        transactions: Transactions,
        store: EdgeStore,
        artifacts: ArtifactService,
        staging: Staging,
        receivers: Receivers,
        pace: UploadPace,
    ) -> None:
        self.transactions = transactions
        self.store, self.artifacts, self.staging = store, artifacts, staging
        self.receivers, self.pace = receivers, pace
        self.in_flight = InFlight(self._ended)
        self._lock = store.database.locks("blob")  # one upload of a blob at a time, in every worker

    async def _ended(self, tx_id: str) -> str | None:
        """The state of a transaction that ended (ABORTED, EXPIRED), perhaps in another worker; else None."""
        tx = await self.store.get(tx_id)
        return None if tx is None or tx.state in (State.OPEN, State.COMMITTED) else tx.state.value

    async def _held(self, tx: Transaction, sha256: str, size: int) -> bool:
        """Whether the edge holds the blob (edge/held.py); for a committed transaction, which
        takes only the blobs its store lost, on the store's word."""
        return sha256 in await self.transactions.held.held({sha256: size}, stored=tx.state is State.COMMITTED)

    async def _open_blob(self, tx_id: str, sha256: str) -> tuple[Transaction, int]:
        """The transaction, if it takes blobs (OPEN, or COMMITTED and being repaired), and the
        blob's size in its manifest; 404/409 otherwise."""
        tx = await self._receiving(tx_id)
        size = await self.store.blob_size(tx_id, sha256)
        if size is None:
            raise NotFound(f"Blob {sha256} is not part of transaction {tx_id}")
        return tx, size

    async def received(self, tx_id: str, sha256: str) -> int:
        """Bytes of a blob the edge has: its size once stored, else what is staged."""
        with self.in_flight.upload(tx_id) as upload:
            tx, size = await self._open_blob(tx_id, sha256)
            if await self._held(tx, sha256, size):
                return size
            async with self._lock(f"{tx_id}/{sha256}"):
                upload.check()
                staged = await self.staging.received(tx_id, sha256)
                if staged == size:  # complete, but the edge stopped before moving it into storage
                    staged = size if await self._finish_staged(tx_id, sha256, size) else 0
        return staged

    async def _finish_staged(self, tx_id: str, sha256: str, size: int) -> bool:
        """Move a completely staged blob into storage if its bytes are right; else drop it."""
        with contextlib.suppress(DigestMismatch):  # its bytes changed since they were staged
            staged = await self.staging.open(tx_id, sha256, size)  # reads it back, hashing
            await asyncio.to_thread(partial(staged.close, fsync=False))
            if staged.sha256() == sha256:
                await self.staging.move_into(self.artifacts.storage, tx_id, sha256, size)
                await self.transactions.held.stored(tx_id, [sha256])
                await self.artifacts.restored([sha256])
                return True
        await self.staging.drop(tx_id, sha256)
        return False

    async def upload(
        self,
        tx_id: str,
        sha256: str,
        body: Callable[[], AsyncIterator[bytes] | RawBody],
        *,
        content_range: tuple[int, int, int] | None,
        declared: int | None,
        interrupt: Callable[[BaseException], None],
    ) -> Received:
        """Stage a blob's bytes from the start of ``content_range`` (None: the whole blob, starting
        over), verify the whole blob against the manifest, and move it into the blob store.
        ``body`` is called for the bytes only once everything before them is checked; a body read
        through aiohttp is cut off by ``interrupt`` (its stream's ``set_exception``) when the
        transaction ends meanwhile."""
        async with self._aborted_if_disk_full(tx_id, f"blob {sha256}"):
            with self.in_flight.upload(tx_id) as upload:
                tx, size = await self._open_blob(tx_id, sha256)
                if await self._held(tx, sha256, size):
                    if tx.state is State.COMMITTED:
                        raise Conflict(f"Transaction {tx_id} is COMMITTED and holds blob {sha256}")
                    await self.staging.drop(tx_id, sha256)
                    return Received(sha256, size, created=False)
                start = resume_offset(content_range, size, declared)
                async with self._lock(f"{tx_id}/{sha256}"):
                    await self._receive(tx_id, sha256, size, start, declared, body, upload, interrupt)
                await self._keep(tx_id, upload, [sha256])
        return Received(sha256, size, created=True)

    async def _receive(
        self,
        tx_id: str,
        sha256: str,
        size: int,
        start: int | None,
        declared: int | None,
        body: Callable[[], AsyncIterator[bytes] | RawBody],
        upload: Upload,
        interrupt: Callable[[BaseException], None],
    ) -> None:
        """The body staged from ``start`` on (checked against what is staged), verified, stored."""
        upload.check()
        staged = await self.staging.received(tx_id, sha256)
        if start is not None and start != staged:
            raise ResumeMismatch(staged)
        if declared is not None and (start or 0) + declared > size:
            await self.staging.drop(tx_id, sha256)
            raise BlobRefused(f"Blob {sha256}: {(start or 0) + declared} bytes sent, the manifest says {size}")
        try:
            await self._stage(tx_id, sha256, size, start or 0, body, upload, interrupt)
            upload.check()
            await self.staging.move_into(self.artifacts.storage, tx_id, sha256, size)
            await self.transactions.held.stored(tx_id, [sha256])
        except DigestMismatch as exc:  # the staged file changed under us: start the blob over
            await self.staging.drop(tx_id, sha256)
            raise BlobRefused(f"Blob {sha256}: {exc}") from None
        except FileNotFoundError:  # its staging was freed: by another worker ending the transaction?
            if (state := await self._ended(tx_id)) is not None:
                raise TransactionEnded(tx_id, state) from None
            raise

    @contextlib.asynccontextmanager
    async def _aborted_if_disk_full(self, tx_id: str, what: str) -> AsyncIterator[None]:
        """THREATS: a full disk aborts the transaction and frees its staging. Around the upload's
        registration, so the abort does not wait for the very upload that calls it."""
        try:
            yield
        except StorageFull:
            log.error("disk full while receiving %s: aborting transaction %s", what, tx_id)
            with contextlib.suppress(Conflict):  # committed, and being repaired: nothing to abort
                await self.transactions.abort(tx_id)
            raise

    async def _receiving(self, tx_id: str) -> Transaction:
        """A transaction that takes blobs: OPEN, or COMMITTED, for the blobs its store lost since
        (a repair: the paths that name them serve again once they are back; a blob it holds is
        refused, as any late upload after the commit is); 409 otherwise."""
        tx = await self.transactions.get(tx_id)
        if tx.state not in (State.OPEN, State.COMMITTED):
            raise Conflict(f"Transaction {tx_id} is {tx.state}")
        return tx

    async def _keep(self, tx_id: str, upload: Upload, sha256s: list[str]) -> None:
        """After an upload's blobs are stored: if the transaction ended meanwhile (here, or in
        another process), they are collected again and the upload is refused. Blobs that were
        quarantined are served again."""
        tx = await self.transactions.get(tx_id)
        if upload.ended is None and tx.state in (State.OPEN, State.COMMITTED):
            await self.artifacts.restored(sha256s)
            if tx.state is State.COMMITTED:
                await self.staging.tidy(tx_id)
            return
        await self.artifacts.collect(sha256s)
        await self.staging.free(tx_id)  # made again by this upload, if another worker had freed it
        raise upload.ended or TransactionEnded(tx_id, tx.state)

    async def _stage(
        self,
        tx_id: str,
        sha256: str,
        size: int,
        start: int,
        opened: Callable[[], AsyncIterator[bytes] | RawBody],
        upload: Upload,
        interrupt: Callable[[BaseException], None],
    ) -> None:
        """Append the body to the staged file; a wrong blob is dropped and refused (422), and so is
        one sent too slowly (408) or cut off by the transaction's end (409); a dropped connection
        keeps what arrived, for a resume."""
        staged = await self.staging.open(tx_id, sha256, start)
        guard = PaceGuard(self.pace, f"Blob {sha256}")
        try:
            try:
                upload.check()
                body = opened()
                if isinstance(body, RawBody):
                    await receive_raw(staged, body, guard, self.receivers, upload)
                else:
                    upload.on_stop(interrupt)
                    await append_all(staged, body, size, guard)
            except (BlobRefused, UploadTooSlow, TransactionEnded):
                await asyncio.to_thread(partial(staged.close, keep=False))
                raise
            except BaseException:
                with contextlib.suppress(OSError):  # the first error is the one to answer
                    await asyncio.to_thread(staged.close)  # keeps what arrived, fsynced, for a resume
                raise
            await asyncio.to_thread(partial(staged.close, fsync=False))  # move_into fsyncs what it keeps
        except (BlobRefused, UploadTooSlow, TransactionEnded):
            await self.staging.drop(tx_id, sha256)
            raise
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise  # a dropped connection keeps what arrived, for a resume
            await self.staging.drop(tx_id, sha256)  # a full disk frees this blob's bytes at once
            raise os_storage_error(exc, f"staging blob {sha256} failed") from None
        if staged.size != size or staged.sha256() != sha256:
            await self.staging.drop(tx_id, sha256)
            what = f"{staged.size} bytes" if staged.size != size else f"sha256 {staged.sha256()}"
            raise BlobRefused(f"Blob {sha256} of {size} bytes refused: received {what}")

    async def upload_batch(
        self,
        tx_id: str,
        chunks: AsyncIterator[bytes],
        *,
        declared: int | None,
        interrupt: Callable[[BaseException], None],
    ) -> Batch:
        """Store the small blobs of a batch body (wire/batch.py), each checked against its sha256.

        A blob that is wrong or cut short refuses the rest of the batch (422); the ones before
        it stay stored, being right, so retrying the whole batch is harmless. Blobs already
        held are checked and not stored twice. The transaction's end cuts the body off (409)
        through ``interrupt``, as for a single upload.
        """
        async with self._aborted_if_disk_full(tx_id, "a blob batch"):
            with self.in_flight.upload(tx_id) as upload:
                tx = await self._receiving(tx_id)
                upload.on_stop(interrupt)
                guard = PaceGuard(self.pace, f"Blob batch for transaction {tx_id}")
                body = BatchReader(partial(guard.read, chunks))
                shas = await body.head()
                if tx.state is State.COMMITTED and (held := await self.artifacts.storage.sizes(shas)):
                    raise Conflict(f"Transaction {tx_id} is COMMITTED and holds blobs {listed(sorted(held))}")
                total = await self._store_batch(tx_id, body, shas, declared)
                await self._keep(tx_id, upload, shas)
        return Batch(len(shas), total)

    async def _store_batch(self, tx_id: str, body: BatchReader, shas: list[str], declared: int | None) -> int:
        """The blobs of a batch, read and stored a group at a time; answers their bytes in all."""
        sizes = await self.store.blob_sizes(tx_id, shas)
        if strangers := [s for s in shas if s not in sizes]:
            raise NotFound(f"Blobs not part of transaction {tx_id}: {listed(strangers)}")
        check_sizes(shas, sizes)
        total = sum(sizes[s] for s in shas)
        if declared is not None and declared != body.consumed + total:
            raise BadRequest(f"Content-Length must be {body.consumed + total}: the head line and the listed blobs")
        group: list[tuple[str, list[bytes]]] = []
        grouped = 0
        try:
            for sha in shas:
                pieces = await body.take(sizes[sha])
                if pieces is None:  # the complete blobs before it are kept, as a dropped upload's bytes are
                    await self._store_group(tx_id, group)
                    raise BlobRefused(f"Blob batch ends inside blob {sha}, before all {len(shas)} listed blobs")
                group.append((sha, pieces))
                grouped += sizes[sha]
                if grouped >= BATCH_GROUP or sha == shas[-1]:
                    await self._store_group(tx_id, group)
                    group, grouped = [], 0
            if not await body.at_end():
                raise BlobRefused(f"Blob batch is longer than its {len(shas)} listed blobs")
        except DigestMismatch as exc:
            raise BlobRefused(f"Blob refused, its bytes do not match the manifest: {exc}") from None
        return total

    async def _store_group(self, tx_id: str, group: list[tuple[str, list[bytes]]]) -> None:
        """Store a group of a batch's blobs and record those stored (edge/held.py)."""
        stored = [sha for sha, _ in group]
        try:
            await self.artifacts.storage.write_many(group)
        except DigestMismatch as exc:  # the blobs before the wrong one are stored
            await self.transactions.held.stored(tx_id, stored[: stored.index(str(exc.expected))])
            raise
        await self.transactions.held.stored(tx_id, stored)
