"""The edge side of two-phase distribution (docs/transactions.md): start, upload, commit, abort.

Nothing of a bundle is visible before its commit, which publishes every index entry
and the edge's record of the bundle in one sqlite transaction; blobs reach the blob
store earlier, but content-addressed blobs are invisible until an entry names them.
So a crash at any moment leaves either no trace of the bundle or all of it, and every
step can be retried: a transaction is named by its manifest's sha256, and each step
answers the state it finds.

Steps on one transaction are serialised by a per-transaction lock in this process;
uploads of different blobs run in parallel, each under its own per-blob lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

from cachetools import LRUCache

from repository.artifacts import ArtifactService, guess_mime_type
from repository.catalog import Artifact, Repo, now_ms
from repository.errors import BadRequest, Conflict, NotFound, RepositoryError
from repository.policy import EDGE_UPLOADS_REPO
from storage_backends import DigestMismatch, StorageFull, os_storage_error
from storage_backends.errors import DISK_FULL_ERRNOS
from wire.batch import BatchReader, check_sizes
from wire.manifest import Manifest, ManifestError, decode
from wire.protocol import RECEIVED_BYTES
from wire.protocol import TransactionState as State

from .held import HeldBlobs
from .pace import PaceGuard, UploadPace, UploadTooSlow
from .raw_body import RawBody, Receivers
from .staging import IO_CHUNK, IO_PIECES, StagedFile, Staging
from .store import EdgeStore, ReceivedBundle, Transaction, bundle_owner
from .trust import TrustedKeys

log = logging.getLogger(__name__)

# Bytes of small blobs stored with one call to the blob store: each call makes its blobs durable
# with one flush of the disk's cache, so the larger the group the fewer flushes; the group is held
# in memory, so it is bounded (a whole batch from the Distribution service fits in one).
BATCH_GROUP = 4 * 1024 * 1024
# Manifests decoded at start, kept for their commit (a thousand-file manifest takes tens of
# milliseconds to decode and check); a transaction not among them is decoded again.
DECODED_MANIFESTS = 16
LISTED_IN_ERRORS = 10


class BlobRefused(RepositoryError):
    """The bytes sent are not the blob the manifest lists; nothing of them is kept."""

    status = 422
    default_message = "Blob refused"


class UploadsTargeted(RepositoryError):
    """A manifest with a target in the uploads repo, where deployers write: a bundle's file
    there could be overwritten while the edge still lists the bundle. Refused at start."""

    status = 422
    default_message = "Release bundle content cannot go to the uploads repository"


class ResumeMismatch(RepositoryError):
    """A resumed upload that does not start where the staged bytes end."""

    status = 416
    default_message = "Content-Range does not start at the bytes received so far"

    def __init__(self, received: int) -> None:
        super().__init__(
            f"Content-Range must start at byte {received}, the bytes received so far",
            headers={RECEIVED_BYTES: str(received)},
        )


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - LISTED_IN_ERRORS} more" if len(items) > LISTED_IN_ERRORS else ""
    return ", ".join(items[:LISTED_IN_ERRORS]) + more


@dataclass(frozen=True)
class Started:
    transaction: Transaction
    created: bool  # opened (or reopened) by this start
    missing: list[str]


@dataclass(frozen=True)
class Batch:
    blobs: int
    size: int


@dataclass(frozen=True)
class Received:
    sha256: str
    size: int
    created: bool  # False: the edge already held it


def _distinct_blobs(manifest: Manifest) -> dict[str, int]:
    blobs: dict[str, int] = {}
    for artifact in manifest.artifacts:
        if blobs.setdefault(artifact.sha256, artifact.size) != artifact.size:
            raise ManifestError(f"Invalid manifest: sha256 {artifact.sha256} is listed with two sizes")
    return blobs


def _resume_offset(content_range: tuple[int, int, int] | None, size: int, declared: int | None) -> int | None:
    """Where a PUT's bytes start: ``bytes first-last/total`` must run to the end of the blob."""
    if content_range is None:
        return None
    first, last, total = content_range
    if total != size:
        raise BlobRefused(f"Content-Range says {total} bytes; the manifest says {size}")
    if last != size - 1 or first > last:
        raise BadRequest(f"Content-Range must run from the resume offset to byte {size - 1}")
    if declared is not None and declared != last - first + 1:
        raise BadRequest("Content-Length does not match Content-Range")
    return first


def _split(target: str) -> tuple[str, str]:
    repo, _, path = target.partition("/")
    return repo, path


def _refuse_uploads_targets(manifest: Manifest) -> None:
    targets = [a.target for a in manifest.artifacts if _split(a.target)[0] == EDGE_UPLOADS_REPO]
    if targets:
        raise UploadsTargeted(
            f"Release bundle content cannot go to the uploads repository {EDGE_UPLOADS_REPO}: {_listed(targets)}"
        )


def _entries(manifest: Manifest, owner: str, user: str, now: int) -> list[Artifact]:
    entries = []
    for a in manifest.artifacts:
        repo, path = _split(a.target)
        entries.append(
            Artifact(repo=repo, path=path, sha256=a.sha256, sha1=a.sha1, md5=a.md5, size=a.size,
                     mime_type=guess_mime_type(path), created=now, created_by=user, modified=now,
                     modified_by=user, owner=owner, properties=a.properties)
        )  # fmt: skip
    return entries


class Transactions:
    def __init__(
        self,
        store: EdgeStore,
        trust: TrustedKeys,
        artifacts: ArtifactService,
        staging: Staging,
        ttl: int,
        receivers: Receivers,
        pace: UploadPace = UploadPace(),
    ) -> None:
        self.store = store
        self.trust = trust
        self.artifacts = artifacts
        self.staging = staging
        self.ttl = ttl
        self.pace = pace
        self.receivers = receivers
        self.held = HeldBlobs(artifacts.catalog, store, artifacts.storage)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # by transaction id, which is the sha256 of the manifest's bytes, so an entry cannot go stale
        self._manifests: LRUCache[str, Manifest] = LRUCache(DECODED_MANIFESTS)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- start ------------------------------------------------------------------

    async def start(self, manifest_text: str, signature: str) -> Started:
        """Verify a signed manifest, check it can be published, and open (or find) its transaction."""
        try:
            data = manifest_text.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError("Invalid manifest: not encodable as UTF-8") from None
        manifest = await asyncio.to_thread(decode, data)
        blobs = _distinct_blobs(manifest)
        tx_id = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        signer = await self.trust.verify(data, signature)
        _refuse_uploads_targets(manifest)
        async with self._lock(tx_id):
            existing = await self.store.get(tx_id)
            if existing is not None and existing.state is State.COMMITTED:
                return Started(existing, False, [])
            await self._check_publishable(tx_id, manifest)
            now = now_ms()
            tx = Transaction(tx_id, manifest.name, manifest.version, State.OPEN, signer, now,
                             now + self.ttl * 1000, None, len(manifest.artifacts),
                             sum(a.size for a in manifest.artifacts))  # fmt: skip
            tx, created = await self.store.open(tx, data, signature, blobs)
            self._manifests[tx_id] = manifest
        if created:
            log.info("transaction %s open: %s/%s signed by %s", tx_id, tx.name, tx.version, signer)
        return Started(tx, created, await self.missing(tx_id))

    async def _check_publishable(self, tx_id: str, manifest: Manifest) -> None:
        """409 where the bundle could not be committed as it is: its name and version hold another
        manifest, or a target path holds other bytes (a folder, a file of an upload or a bundle)."""
        other = await self.store.bundle(manifest.name, manifest.version)
        if other is not None and other.manifest_sha256 != tx_id:
            raise Conflict(
                f"Release bundle {manifest.name}/{manifest.version} is already on this edge with another manifest"
            )
        targets = [(*_split(a.target), a.sha256) for a in manifest.artifacts]
        clashes = await self.artifacts.catalog.conflicts(targets)
        if clashes:
            raise Conflict(f"Target paths already hold other content: {_listed(clashes)}")

    async def missing(self, tx_id: str) -> list[str]:
        """The transaction's distinct blobs this edge does not hold yet, from any bundle or upload."""
        blobs = await self.store.blobs(tx_id)
        held = await self.held.held(blobs)
        return sorted(s for s in blobs if s not in held)

    async def _held(self, sha256: str, size: int) -> bool:
        return sha256 in await self.held.held({sha256: size})

    async def get(self, tx_id: str) -> Transaction:
        tx = await self.store.get(tx_id)
        if tx is None:
            raise NotFound(f"No transaction {tx_id}")
        return tx

    async def _open_blob(self, tx_id: str, sha256: str) -> int:
        """The blob's size in an OPEN transaction's manifest; 404/409 otherwise."""
        tx = await self.get(tx_id)
        if tx.state is not State.OPEN:
            raise Conflict(f"Transaction {tx_id} is {tx.state}")
        size = await self.store.blob_size(tx_id, sha256)
        if size is None:
            raise NotFound(f"Blob {sha256} is not part of transaction {tx_id}")
        return size

    # -- upload -----------------------------------------------------------------

    async def received(self, tx_id: str, sha256: str) -> int:
        """Bytes of a blob the edge has: its size once stored, else what is staged."""
        size = await self._open_blob(tx_id, sha256)
        if await self._held(sha256, size):
            return size
        async with self._lock(f"{tx_id}/{sha256}"):
            staged = await self.staging.received(tx_id, sha256)
            if staged == size:  # complete, but the edge stopped before moving it into storage
                staged = size if await self._finish_staged(tx_id, sha256, size) else 0
        return staged

    async def _finish_staged(self, tx_id: str, sha256: str, size: int) -> bool:
        """Move a completely staged blob into storage if its bytes are right; else drop it."""
        staged = await self.staging.open(tx_id, sha256, size)  # reads it back, hashing
        await asyncio.to_thread(partial(staged.close, fsync=False))
        if staged.sha256() == sha256:
            with contextlib.suppress(DigestMismatch):
                await self.staging.move_into(self.artifacts.storage, tx_id, sha256, size)
                await self.held.stored(tx_id, [sha256])
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
    ) -> Received:
        """Stage a blob's bytes from the start of ``content_range`` (None: the whole blob, starting
        over), verify the whole blob against the manifest, and move it into the blob store.
        ``body`` is called for the bytes only once everything before them is checked."""
        size = await self._open_blob(tx_id, sha256)
        if await self._held(sha256, size):
            await self.staging.drop(tx_id, sha256)
            return Received(sha256, size, created=False)
        start = _resume_offset(content_range, size, declared)
        async with self._lock(f"{tx_id}/{sha256}"):
            staged = await self.staging.received(tx_id, sha256)
            if start is not None and start != staged:
                raise ResumeMismatch(staged)
            if declared is not None and (start or 0) + declared > size:
                await self.staging.drop(tx_id, sha256)
                raise BlobRefused(f"Blob {sha256}: {(start or 0) + declared} bytes sent, the manifest says {size}")
            try:
                await self._stage(tx_id, sha256, size, start or 0, body)
                await self.staging.move_into(self.artifacts.storage, tx_id, sha256, size)
                await self.held.stored(tx_id, [sha256])
            except DigestMismatch as exc:  # the staged file changed under us: start the blob over
                await self.staging.drop(tx_id, sha256)
                raise BlobRefused(f"Blob {sha256}: {exc}") from None
            except StorageFull:  # THREATS: a full disk aborts the transaction and frees its staging
                log.error("disk full while receiving blob %s: aborting transaction %s", sha256, tx_id)
                await self.abort(tx_id)
                raise
        tx = await self.get(tx_id)
        if tx.state is not State.OPEN:  # aborted or expired while the bytes arrived
            await self.artifacts.collect([sha256])
            raise Conflict(f"Transaction {tx_id} is {tx.state}")
        return Received(sha256, size, created=True)

    async def _stage(
        self, tx_id: str, sha256: str, size: int, start: int, opened: Callable[[], AsyncIterator[bytes] | RawBody]
    ) -> None:
        """Append the body to the staged file; a wrong blob is dropped and refused (422), and so is
        one sent too slowly (408); a dropped connection keeps what arrived, for a resume."""
        staged = await self.staging.open(tx_id, sha256, start)
        guard = PaceGuard(self.pace, f"Blob {sha256}")
        try:
            try:
                body = opened()
                if isinstance(body, RawBody):
                    await _receive_raw(staged, body, guard, self.receivers)
                else:
                    await _append_all(staged, body, size, guard)
            except (BlobRefused, UploadTooSlow):
                await asyncio.to_thread(partial(staged.close, keep=False))
                raise
            except BaseException:
                with contextlib.suppress(OSError):  # the first error is the one to answer
                    await asyncio.to_thread(staged.close)  # keeps what arrived, fsynced, for a resume
                raise
            await asyncio.to_thread(partial(staged.close, fsync=False))  # move_into fsyncs what it keeps
        except (BlobRefused, UploadTooSlow):
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

    async def upload_batch(self, tx_id: str, chunks: AsyncIterator[bytes], *, declared: int | None) -> Batch:
        """Store the small blobs of a batch body (wire/batch.py), each checked against its sha256.

        A blob that is wrong or cut short refuses the rest of the batch (422); the ones before
        it stay stored, being right, so retrying the whole batch is harmless. Blobs already
        held are checked and not stored twice.
        """
        tx = await self.get(tx_id)
        if tx.state is not State.OPEN:
            raise Conflict(f"Transaction {tx_id} is {tx.state}")
        guard = PaceGuard(self.pace, f"Blob batch for transaction {tx_id}")
        body = BatchReader(partial(guard.read, chunks))
        shas = await body.head()
        sizes = await self.store.blob_sizes(tx_id, shas)
        if strangers := [s for s in shas if s not in sizes]:
            raise NotFound(f"Blobs not part of transaction {tx_id}: {_listed(strangers)}")
        check_sizes(shas, sizes)
        total = sum(sizes[s] for s in shas)
        if declared is not None and declared != body.consumed + total:
            raise BadRequest(f"Content-Length must be {body.consumed + total}: the head line and the listed blobs")
        group: list[tuple[str, list[bytes]]] = []
        grouped = 0

        async def store_group() -> None:
            stored = [sha for sha, _ in group]
            try:
                await self.artifacts.storage.write_many(group)
            except DigestMismatch as exc:  # the blobs before the wrong one are stored
                await self.held.stored(tx_id, stored[: stored.index(str(exc.expected))])
                raise
            await self.held.stored(tx_id, stored)

        try:
            for sha in shas:
                pieces = await body.take(sizes[sha])
                if pieces is None:  # the complete blobs before it are kept, as a dropped upload's bytes are
                    await store_group()
                    raise BlobRefused(f"Blob batch ends inside blob {sha}, before all {len(shas)} listed blobs")
                group.append((sha, pieces))
                grouped += sizes[sha]
                if grouped >= BATCH_GROUP or sha == shas[-1]:
                    await store_group()
                    group, grouped = [], 0
            if not await body.at_end():
                raise BlobRefused(f"Blob batch is longer than its {len(shas)} listed blobs")
        except DigestMismatch as exc:
            raise BlobRefused(f"Blob refused, its bytes do not match the manifest: {exc}") from None
        except StorageFull:
            log.error("disk full while receiving a blob batch: aborting transaction %s", tx_id)
            await self.abort(tx_id)
            raise
        tx = await self.get(tx_id)
        if tx.state is not State.OPEN:  # aborted or expired while the bytes arrived
            await self.artifacts.collect(shas)
            raise Conflict(f"Transaction {tx_id} is {tx.state}")
        return Batch(len(shas), total)

    # -- commit, abort, expiry ----------------------------------------------------

    async def commit(self, tx_id: str, user: str) -> Transaction:
        """Publish every entry of the manifest in one database transaction; again: the same answer."""
        async with self._lock(tx_id):
            tx = await self.get(tx_id)
            if tx.state is State.COMMITTED:
                return tx
            if tx.state is not State.OPEN:
                raise Conflict(f"Transaction {tx_id} is {tx.state}; it cannot be committed")
            data, signature = await self.store.manifest(tx_id)
            await self.trust.verify(data, signature)  # its key may have been removed since start
            manifest = self._manifests.pop(tx_id, None)
            if manifest is None:
                manifest = await asyncio.to_thread(decode, data)
            now = now_ms()
            entries = _entries(manifest, tx.owner, user, now)
            repos = [Repo(key, anonymous_read=True) for key in sorted({e.repo for e in entries})]

            async def all_blobs_held() -> None:
                missing = await self.missing(tx_id)
                if missing:
                    raise Conflict(f"Cannot commit: {len(missing)} blob(s) missing: {_listed(missing)}")

            paths = [(e.repo, e.path) for e in entries]
            extra = partial(self.store.commit_rows, tx, paths, now)
            await self.artifacts.storage.sync()  # every blob's name durable before an entry names it
            await self.artifacts.publish(entries, repos, check=all_blobs_held, extra=extra)
            log.info("transaction %s committed: %s/%s, %d files", tx_id, tx.name, tx.version, tx.files)
        await self.staging.free(tx_id)
        return await self.get(tx_id)

    async def abort(self, tx_id: str) -> None:
        """Discard an uncommitted transaction and its staging; a committed one is refused (409)."""
        async with self._lock(tx_id):
            tx = await self.get(tx_id)
            if tx.state is State.COMMITTED:
                raise Conflict(f"Transaction {tx_id} is committed; delete the bundle instead")
            await self.store.end(tx_id, State.ABORTED)
            await self._free(tx_id)

    async def expire(self, now: int | None = None) -> list[str]:
        """End every OPEN transaction past its expiry and free what it staged."""
        expired = []
        for tx_id in await self.store.expired(now_ms() if now is None else now):
            async with self._lock(tx_id):
                if await self.store.end(tx_id, State.EXPIRED):
                    await self._free(tx_id)
                    expired.append(tx_id)
                    log.info("transaction %s expired", tx_id)
        return expired

    async def _free(self, tx_id: str) -> None:
        """Staged files go, and blobs moved into storage for this transaction alone (those of
        other transactions in flight or committed are pinned: ``EdgeStore.pinned``)."""
        await self.staging.free(tx_id)
        await self.artifacts.collect(await self.store.blobs(tx_id))

    # -- bundles ------------------------------------------------------------------

    async def bundles(self) -> list[ReceivedBundle]:
        return await self.store.bundles()

    async def delete_bundle(self, name: str, version: str) -> None:
        """Remove a committed bundle's index entries in one database transaction, then collect
        the blobs nothing references any more. Paths another bundle claims too are kept for it."""
        bundle = await self.store.bundle(name, version)
        if bundle is None:
            raise NotFound(f"No release bundle {name}/{version} on this edge")
        async with self._lock(bundle.manifest_sha256):
            paths, others = await self.store.bundle_claims(name, version)
            extra = partial(self.store.forget_bundle_rows, bundle)
            removed = await self.artifacts.unpublish(bundle_owner(name, version), paths, others, extra=extra)
        log.info("bundle %s/%s deleted: %d index entries removed", name, version, len(removed))

    async def recover(self) -> None:
        """At start-up: staging of transactions no longer OPEN is removed; OPEN ones resume."""
        await self.staging.sweep(await self.store.open_ids())

    async def expire_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except Exception:  # the next round tries again
                log.exception("expiring transactions failed")


async def _append_all(staged: StagedFile, chunks: AsyncIterator[bytes], size: int, guard: PaceGuard) -> None:
    """Write the body into ``staged`` a megabyte at a time from a thread; more than ``size``
    bytes in all is refused, and so is a body slower than ``guard`` allows (only the reads
    are timed out, never a write in progress). What arrived before a dropped connection is
    still written."""
    pending: list[bytes] = []
    buffered = 0
    try:
        while (chunk := await guard.read(chunks)) is not None:
            if staged.size + buffered + len(chunk) > size:
                raise BlobRefused(f"{guard.what} is longer than its {size} bytes in the manifest")
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= IO_CHUNK or len(pending) >= IO_PIECES:
                full, pending, buffered = pending, [], 0
                await asyncio.to_thread(staged.append, full)
    except (BlobRefused, UploadTooSlow):
        raise
    except BaseException:
        if pending:
            await asyncio.to_thread(staged.append, pending)
        raise
    if pending:
        await asyncio.to_thread(staged.append, pending)


async def _receive_raw(staged: StagedFile, body: RawBody, guard: PaceGuard, receivers: Receivers) -> None:
    """Stage a body taken from aiohttp (edge/raw_body.py): what aiohttp had read, then the rest
    straight from the socket in a worker thread. A cancelled upload stops the thread and waits
    for it, so the staged file is never used by two at once."""
    if body.buffered:
        guard.received += len(body.buffered)
        await asyncio.to_thread(staged.append, [body.buffered])
    stop = threading.Event()
    receiving = asyncio.ensure_future(receivers.run(staged.receive, body.sock, body.remaining, guard, stop))
    try:
        await asyncio.shield(receiving)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([receiving])
        raise
