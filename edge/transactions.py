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
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

from cachetools import LRUCache

from repository.artifacts import ArtifactService, guess_mime_type
from repository.catalog import Artifact, Repo, now_ms
from repository.errors import BadRequest, Conflict, NotFound
from repository.manifest import Manifest, ManifestError, decode
from storage_backends import BlobNotFound, DigestMismatch, StorageFull, os_storage_error
from storage_backends.errors import DISK_FULL_ERRNOS
from wire.published import published_digest

from .batch import BATCH_BLOB_MAX, BatchReader
from .pace import PaceGuard, UploadPace, UploadTooSlow
from .raw_body import RawBody, Receivers
from .receiving import (
    BlobRefused,
    InFlight,
    ResumeMismatch,
    TransactionEnded,
    Upload,
    append_all,
    receive_raw,
    resume_offset,
)
from .staging import Staging
from .store import EdgeStore, ReceivedBundle, State, Transaction, bundle_owner
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


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - LISTED_IN_ERRORS} more" if len(items) > LISTED_IN_ERRORS else ""
    return ", ".join(items[:LISTED_IN_ERRORS]) + more


@dataclass(frozen=True)
class Started:
    transaction: Transaction
    created: bool  # opened (or reopened) by this start
    missing: list[str]


@dataclass(frozen=True)
class Published:
    files: int
    bytes: int
    sha256: str  # the digest of the list of what is served (wire/published.py)


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


def _split(target: str) -> tuple[str, str]:
    repo, _, path = target.partition("/")
    return repo, path


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
        self.in_flight = InFlight()
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

    async def missing(self, tx_id: str, *, stored: bool = False) -> list[str]:
        """The transaction's distinct blobs this edge does not hold yet, from any bundle or upload.

        A blob some index entry references counts as held, unless ``stored``: then only the
        blob store's word counts, as for a committed bundle, whose own entries reference all
        of its blobs whether the store still holds them or not."""
        blobs = await self.store.blobs(tx_id)
        unknown = list(blobs)
        if not stored:
            indexed = await self.artifacts.catalog.blob_sizes(unknown)
            unknown = [sha256 for sha256 in unknown if indexed.get(sha256) != blobs[sha256]]
        held = await self.artifacts.storage.sizes(unknown)
        return sorted(s for s in unknown if held.get(s) != blobs[s])

    async def published(self, tx: Transaction) -> Published:
        """What the edge serves of a committed bundle: each path the bundle claims whose index
        entry is there and whose blob the store holds whole, and the digest of that list
        (wire/published.py), for the Distribution service to compare with the manifest's."""
        rows = await self.store.published_rows(tx.name, tx.version)
        held = await self.artifacts.storage.sizes(sorted({sha256 for _, sha256, _ in rows}))
        served = [(target, sha256, size) for target, sha256, size in rows if held.get(sha256) == size]
        digest = await asyncio.to_thread(published_digest, served)
        return Published(len(served), sum(size for *_, size in served), digest)

    async def _held(self, sha256: str, size: int) -> bool:
        try:
            return (await self.artifacts.storage.stat(sha256)).size == size
        except BlobNotFound:
            return False

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
        with self.in_flight.upload(tx_id) as upload:
            size = await self._open_blob(tx_id, sha256)
            if await self._held(sha256, size):
                return size
            async with self._lock(f"{tx_id}/{sha256}"):
                upload.check()
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
                size = await self._open_blob(tx_id, sha256)
                if await self._held(sha256, size):
                    await self.staging.drop(tx_id, sha256)
                    return Received(sha256, size, created=False)
                start = resume_offset(content_range, size, declared)
                async with self._lock(f"{tx_id}/{sha256}"):
                    await self._receive(tx_id, sha256, size, start, declared, body, upload, interrupt)
                await self._kept_if_open(tx_id, upload, [sha256])
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
        except DigestMismatch as exc:  # the staged file changed under us: start the blob over
            await self.staging.drop(tx_id, sha256)
            raise BlobRefused(f"Blob {sha256}: {exc}") from None

    @contextlib.asynccontextmanager
    async def _aborted_if_disk_full(self, tx_id: str, what: str) -> AsyncIterator[None]:
        """THREATS: a full disk aborts the transaction and frees its staging. Around the upload's
        registration, so the abort does not wait for the very upload that calls it."""
        try:
            yield
        except StorageFull:
            log.error("disk full while receiving %s: aborting transaction %s", what, tx_id)
            await self.abort(tx_id)
            raise

    async def _kept_if_open(self, tx_id: str, upload: Upload, sha256s: list[str]) -> None:
        """After an upload's blobs are stored: if the transaction ended meanwhile (here, or in
        another process), they are collected again and the upload is refused."""
        tx = await self.get(tx_id)
        if upload.ended is None and tx.state is State.OPEN:
            return
        await self.artifacts.collect(sha256s)
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
        """Store the small blobs of a batch body (edge/batch.py), each checked against its sha256.

        A blob that is wrong or cut short refuses the rest of the batch (422); the ones before
        it stay stored, being right, so retrying the whole batch is harmless. Blobs already
        held are checked and not stored twice. The transaction's end cuts the body off (409)
        through ``interrupt``, as for a single upload.
        """
        async with self._aborted_if_disk_full(tx_id, "a blob batch"):
            with self.in_flight.upload(tx_id) as upload:
                tx = await self.get(tx_id)
                if tx.state is not State.OPEN:
                    raise Conflict(f"Transaction {tx_id} is {tx.state}")
                upload.on_stop(interrupt)
                body = BatchReader(chunks, PaceGuard(self.pace, f"Blob batch for transaction {tx_id}"))
                shas = await body.head()
                total = await self._store_batch(tx_id, body, shas, declared)
                await self._kept_if_open(tx_id, upload, shas)
        return Batch(len(shas), total)

    async def _store_batch(self, tx_id: str, body: BatchReader, shas: list[str], declared: int | None) -> int:
        """The blobs of a batch, read and stored a group at a time; answers their bytes in all."""
        sizes = await self.store.blob_sizes(tx_id, shas)
        if strangers := [s for s in shas if s not in sizes]:
            raise NotFound(f"Blobs not part of transaction {tx_id}: {_listed(strangers)}")
        if large := [s for s in shas if sizes[s] > BATCH_BLOB_MAX]:
            raise BadRequest(f"Blobs over {BATCH_BLOB_MAX} bytes go alone, not in a batch: {_listed(large)}")
        total = sum(sizes[s] for s in shas)
        if declared is not None and declared != body.consumed + total:
            raise BadRequest(f"Content-Length must be {body.consumed + total}: the head line and the listed blobs")
        group: list[tuple[str, list[bytes]]] = []
        grouped = 0
        try:
            for sha in shas:
                pieces = await body.take(sizes[sha])
                if pieces is None:  # the complete blobs before it are kept, as a dropped upload's bytes are
                    await self.artifacts.storage.write_many(group)
                    raise BlobRefused(f"Blob batch ends inside blob {sha}, before all {len(shas)} listed blobs")
                group.append((sha, pieces))
                grouped += sizes[sha]
                if grouped >= BATCH_GROUP or sha == shas[-1]:
                    await self.artifacts.storage.write_many(group)
                    group, grouped = [], 0
            if not await body.at_end():
                raise BlobRefused(f"Blob batch is longer than its {len(shas)} listed blobs")
        except DigestMismatch as exc:
            raise BlobRefused(f"Blob refused, its bytes do not match the manifest: {exc}") from None
        return total

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
        """Discard an uncommitted transaction and its staging; a committed one is refused (409).
        Uploads of it under way are cut off (409) before its staging goes."""
        async with self._lock(tx_id):
            tx = await self.get(tx_id)
            if tx.state is State.COMMITTED:
                raise Conflict(f"Transaction {tx_id} is committed; delete the bundle instead")
            if await self._end(tx_id, State.ABORTED):
                log.info("transaction %s aborted: %s/%s", tx_id, tx.name, tx.version)

    async def expire(self, now: int | None = None) -> list[str]:
        """End every OPEN transaction past its expiry and free what it staged."""
        expired = []
        for tx_id in await self.store.expired(now_ms() if now is None else now):
            async with self._lock(tx_id):
                if await self._end(tx_id, State.EXPIRED):
                    expired.append(tx_id)
                    log.info("transaction %s expired", tx_id)
        return expired

    async def _end(self, tx_id: str, state: State) -> bool:
        """Mark an OPEN transaction ``state`` (False if it was not OPEN), stop its uploads under way
        and wait for them to let go of its staging, then free what it staged."""
        ended = await self.store.end(tx_id, state)
        await self.in_flight.stop(tx_id, state)
        await self._free(tx_id)
        return ended

    async def _free(self, tx_id: str) -> None:
        """Staged files go, and blobs moved into storage for this transaction alone."""
        await self.staging.free(tx_id)
        blobs = set(await self.store.blobs(tx_id))
        await self.artifacts.collect(blobs - await self.store.needed_elsewhere(tx_id, blobs))

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
