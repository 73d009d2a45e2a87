"""The edge side of two-phase distribution (docs/transactions.md): start, upload, commit, abort.

Nothing of a bundle is visible before its commit, which indexes its entries a page at a
time, hidden, then shows them and the edge's record of the bundle in one short sqlite
transaction (``edge.bundle_index``); blobs reach the blob store earlier, but
content-addressed blobs are invisible until an entry names them.
So a crash at any moment leaves either no trace of the bundle or all of it, and every
step can be retried: a transaction is named by its manifest's sha256, and each step
answers the state it finds.

Steps on one transaction are serialised by a per-transaction lock held across the node's
processes (repository/file_locks.py), so the steps may reach different workers; everything
a step needs from an earlier one is in the database or the staging folder. Uploads of
different blobs run in parallel, each under its own per-blob lock (edge/uploads.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from cachetools import LRUCache

from repository.artifacts import ArtifactService
from repository.catalog import now_ms
from repository.errors import Conflict, NotFound, RepositoryError
from repository.policy import EDGE_UPLOADS_REPO
from wire.manifest import Manifest, ManifestError, decode
from wire.protocol import Removal
from wire.protocol import TransactionState as State
from wire.published import published_digest

from .bundle_index import BundleIndex
from .bundle_index import split_target as _split
from .claims import BundleClaims
from .held import HeldBlobs
from .pace import UploadPace
from .raw_body import Receivers
from .receiving import listed
from .staging import Staging
from .store import EdgeStore, ReceivedBundle, Transaction
from .trust import TrustedKeys
from .uploads import Uploads

log = logging.getLogger(__name__)

# Manifests decoded at start, kept for their commit (a thousand-file manifest takes tens of
# milliseconds to decode and check); a transaction not among them is decoded again.
DECODED_MANIFESTS = 16


class UploadsTargeted(RepositoryError):
    """A manifest with a target in the uploads repo, where deployers write: a bundle's file
    there could be overwritten while the edge still lists the bundle. Refused at start."""

    status = 422
    default_message = "Release bundle content cannot go to the uploads repository"


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


def _distinct_blobs(manifest: Manifest) -> dict[str, int]:
    blobs: dict[str, int] = {}
    for artifact in manifest.artifacts:
        if blobs.setdefault(artifact.sha256, artifact.size) != artifact.size:
            raise ManifestError(f"Invalid manifest: sha256 {artifact.sha256} is listed with two sizes")
    return blobs


def _refuse_uploads_targets(manifest: Manifest) -> None:
    targets = [a.target for a in manifest.artifacts if _split(a.target)[0] == EDGE_UPLOADS_REPO]
    if targets:
        raise UploadsTargeted(
            f"Release bundle content cannot go to the uploads repository {EDGE_UPLOADS_REPO}: {listed(targets)}"
        )


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
        removal_files_per_request: int | None = None,
    ) -> None:
        self.store = store
        self.trust = trust
        self.artifacts = artifacts
        self.staging = staging
        self.ttl = ttl
        self.receivers = receivers
        self.removal_files_per_request = removal_files_per_request  # None: a removal in one call
        self.held = HeldBlobs(artifacts, store)
        self.uploads = Uploads(self, store, artifacts, staging, receivers, pace)
        self.index = BundleIndex(store, BundleClaims(store.database), artifacts)
        self._lock = store.database.locks("transaction")  # one step of a transaction at a time, in every worker
        # by transaction id, which is the sha256 of the manifest's bytes, so an entry cannot go stale
        self._manifests: LRUCache[str, Manifest] = LRUCache(DECODED_MANIFESTS)

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
                # what its store lacks (lost, or quarantined by the scrub) is sent again: a repair
                return Started(existing, False, await self.missing(tx_id, stored=True))
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
            raise Conflict(f"Target paths already hold other content: {listed(clashes)}")

    async def missing(self, tx_id: str, *, stored: bool = False) -> list[str]:
        """The transaction's distinct blobs this edge does not hold yet, from any bundle or upload.

        A blob some index entry references, or one a transaction recorded as stored, counts as
        held (edge/held.py), unless ``stored``: then only the blob store's word counts, as for a
        committed bundle, whose own entries reference all of its blobs whether the store still
        holds them or not."""
        blobs = await self.store.blobs(tx_id)
        held = await self.held.held(blobs, stored=stored)
        return sorted(s for s in blobs if s not in held)

    async def published(self, tx: Transaction) -> Published:
        """What the edge serves of a committed bundle: each path the bundle claims whose index
        entry is there and whose blob the store holds whole, and the digest of that list
        (wire/published.py), for the Distribution service to compare with the manifest's."""
        rows = await self.store.published_rows(tx.name, tx.version)
        held = await self.artifacts.storage.sizes(sorted({sha256 for _, sha256, _ in rows}))
        served = [(target, sha256, size) for target, sha256, size in rows if held.get(sha256) == size]
        digest = await asyncio.to_thread(published_digest, served)
        return Published(len(served), sum(size for *_, size in served), digest)

    async def get(self, tx_id: str) -> Transaction:
        tx = await self.store.get(tx_id)
        if tx is None:
            raise NotFound(f"No transaction {tx_id}")
        return tx

    # -- commit, abort, expiry ----------------------------------------------------

    async def commit(self, tx_id: str, user: str) -> Transaction:
        """Publish every entry of the manifest, shown all at once (``BundleIndex.publish``); again:
        the same answer."""
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
            # The blobs are pinned by the OPEN transaction (EdgeStore.pinned), so nothing collects
            # one between this check and the page that indexes it.
            missing = await self.missing(tx_id)
            if missing:
                raise Conflict(f"Cannot commit: {len(missing)} blob(s) missing: {listed(missing)}")
            await self.artifacts.storage.sync()  # every blob's name durable before an entry names it
            await self.index.publish(tx, manifest, user, now_ms())
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
        await self.uploads.in_flight.stop(tx_id, state)
        await self._free(tx_id)
        return ended

    async def _free(self, tx_id: str) -> None:
        """Staged files go, and blobs moved into storage for this transaction alone (those of
        other transactions in flight or committed are pinned: ``EdgeStore.pinned``)."""
        await self.staging.free(tx_id)
        async for page in self.store.blob_pages(tx_id):
            await self.artifacts.collect(page)

    # -- bundles ------------------------------------------------------------------

    async def bundles(self) -> list[ReceivedBundle]:
        return await self.store.bundles()

    async def delete_bundle(self, name: str, version: str) -> Removal:
        """Remove a committed bundle, at most ``removal_files_per_request`` files per call
        (``BundleIndex.remove``): hidden at once, its entries then deleted a page at a time and
        the blobs nothing references any more collected; answers how far it has got, and the
        caller asks again until it is done. Paths another bundle claims too are kept for it.
        Asked again while one runs, or after a crash cut it short, it goes on with the removal;
        one that waited for another to finish it is answered as done."""
        bundle = await self.store.bundle(name, version)
        change = await self.index.claims.change(name, version)
        tx_id = bundle.manifest_sha256 if bundle is not None else change.transaction_id if change else None
        if tx_id is None:
            raise NotFound(f"No release bundle {name}/{version} on this edge")
        async with self._lock(tx_id):
            try:
                return await self.index.remove(name, version, self.removal_files_per_request)
            except NotFound:  # gone meanwhile: what was asked is done
                return Removal(0, 0)

    async def recover(self, *, sweep_staging: bool = True) -> None:
        """At start-up: a commit a crash cut short is rolled back and a removal finished (safe while
        other workers run: a live worker holds the bundle-change lock for all of its change); with
        ``sweep_staging``, when no other worker runs, staging of transactions no longer OPEN is
        removed; OPEN ones resume."""
        await self.index.resume()
        if sweep_staging:
            await self.staging.sweep(await self.store.open_ids())

    async def expire_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except Exception:  # the next round tries again
                log.exception("expiring transactions failed")
