"""The edge side of two-phase distribution (docs/transactions.md): start, upload, commit, abort.

Nothing of a bundle is visible before its commit, which indexes its entries a page at a
time, hidden, then shows them and the edge's record of the bundle in one short database
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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

from repository.artifacts import ArtifactService
from repository.catalog import now_ms
from repository.errors import Conflict, NotFound, RepositoryError
from repository.policy import EDGE_UPLOADS_REPO
from storage_backends import open_in_thread, os_storage_error
from wire import protocol
from wire.manifest import ManifestArtifact, ManifestError, ManifestSbom
from wire.manifest_reader import ManifestReader, ManifestSummary
from wire.protocol import Removal
from wire.protocol import TransactionState as State
from wire.published import PublishedDigest

from .bundle_index import BundleIndex
from .bundle_index import split_target as _split
from .claims import REMOVE, BundleClaims
from .held import HeldBlobs
from .pace import UploadPace
from .raw_body import Receivers
from .receiving import listed
from .sbom_store import SbomStore
from .staging import Staging
from .store import EdgeStore, ReceivedBundle, Transaction
from .transaction_files import TransactionFiles, file_of
from .trust import TrustedKeys
from .uploads import Uploads

log = logging.getLogger(__name__)

# Missing blobs a failed commit names in its message.
NAMED_MISSING = 10


class UploadsTargeted(RepositoryError):
    """A manifest with a target in the uploads repo, where deployers write: a bundle's file
    there could be overwritten while the edge still lists the bundle. Refused at start."""

    status = 422
    default_message = "Release bundle content cannot go to the uploads repository"


@dataclass(frozen=True)
class Started:
    transaction: Transaction
    created: bool  # opened (or reopened) by this start


@dataclass(frozen=True)
class Published:
    files: int
    bytes: int
    sha256: str  # the digest of the list of what is served (wire/published.py)


class VirtualTargeted(RepositoryError):
    """A manifest with a target under a virtual repo's key: that key resolves through the virtual
    repo's members, so the bundle's files there could never be read. Refused at start."""

    status = 422
    default_message = "Release bundle content cannot go to a virtual repository"


def _check_page(page: Sequence[ManifestArtifact], is_virtual: Callable[[str], object]) -> None:
    """A page's own checks: no target in the uploads repo or a virtual repo, no sha256 with two
    sizes within it (across pages: ``TransactionFiles.check_sizes``)."""
    targets = [a.target for a in page if _split(a.target)[0] == EDGE_UPLOADS_REPO]
    if targets:
        raise UploadsTargeted(
            f"Release bundle content cannot go to the uploads repository {EDGE_UPLOADS_REPO}: {listed(targets)}"
        )
    targets = [a.target for a in page if is_virtual(_split(a.target)[0])]
    if targets:
        raise VirtualTargeted(f"Release bundle content cannot go to a virtual repository: {listed(targets)}")
    sizes: dict[str, int] = {}
    for a in page:
        if sizes.setdefault(a.sha256, a.size) != a.size:
            raise ManifestError(f"Invalid manifest: sha256 {a.sha256} is listed with two sizes")


def _refuse_clashes(clashes: list[str]) -> None:
    """409 where target paths hold other bytes (a folder, a file of an upload or a bundle)."""
    if clashes:
        raise Conflict(f"Target paths already hold other content: {listed(clashes)}")


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
        self.files = TransactionFiles(store.database)
        self.sboms = SbomStore(store.database)
        self._lock = store.database.locks("transaction")  # one step of a transaction at a time, in every worker
        # whether a repo key is a virtual repo's (edge/virtual_setup.py sets it): no bundle lands there
        self.is_virtual: Callable[[str], object] = lambda _key: None

    # -- start ------------------------------------------------------------------

    async def start(self, manifest: Path, sha256: str, signature: str) -> Started:
        """Verify a signed manifest (the file ``manifest``, whose bytes hash to ``sha256``), check it
        can be published, and open (or find) its transaction. The manifest is read a page at a time
        and its files recorded as they come (``TransactionFiles``); the transaction opens, in one
        short write, only once every page and the header have passed."""
        signer = await self.trust.verify(manifest, signature)
        async with self._lock(sha256):
            existing = await self.store.get(sha256)
            if existing is not None and existing.state is State.COMMITTED:
                await self._check_not_being_removed(existing.name, existing.version)
                # what its store lacks (lost, or quarantined by the scrub) is sent again: a repair
                return Started(existing, False)
            if existing is not None and existing.state is State.OPEN:
                await self._check_bundle_free(existing.id, existing.name, existing.version)
                async for page in self.files.pages(existing.id):
                    _refuse_clashes(await self.artifacts.catalog.conflicts([(f.repo, f.path, f.sha256) for f in page]))
                return Started(existing, False)
            await self.files.drop(sha256)  # what an earlier start of this manifest left
            try:
                summary, clashes = await self._record(sha256, manifest)
                header = summary.header
                await self._check_bundle_free(sha256, header.name, header.version)
                _refuse_clashes(clashes)
                await self.files.check_sizes(sha256)
                now = now_ms()
                tx = Transaction(sha256, header.name, header.version, State.OPEN, signer, now,
                                 now + self.ttl * 1000, None, summary.files, summary.bytes)  # fmt: skip
                sbom = partial(self.sboms.record_rows, sha256, header.sbom) if header.sbom else None
                tx, created = await self.store.open(tx, manifest, signature, sbom)
            except BaseException:
                await self.files.drop(sha256)
                raise
        if created:
            log.info("transaction %s open: %s/%s signed by %s", tx.id, tx.name, tx.version, signer)
        return Started(tx, created)

    async def _record(self, tx_id: str, manifest: Path) -> tuple[ManifestSummary, list[str]]:
        """Read the manifest a page at a time (in a thread: decoding is CPU work), checking and
        recording each page's files; the target paths of the first page that clashes with what
        the edge holds come back, for the caller to refuse once it knows the bundle's name."""
        clashes: list[str] = []
        with await open_in_thread(open, manifest, "rb") as stream:
            reader = ManifestReader(cast(BinaryIO, stream))  # opened "rb"
            pages = reader.pages()
            while (page := await asyncio.to_thread(next, pages, None)) is not None:
                _check_page(page, self.is_virtual)
                files = [file_of(a) for a in page]
                if not clashes:
                    clashes = await self.artifacts.catalog.conflicts([(f.repo, f.path, f.sha256) for f in files])
                await self.files.add(tx_id, files)
        assert reader.summary is not None
        return reader.summary, clashes

    async def _check_not_being_removed(self, name: str, version: str) -> None:
        """409 while a removal of the bundle is unfinished (an undistribute stopped part-way): the
        bundle is hidden and part-removed, so it cannot count as committed, nor be pushed again
        until the removal has run to its end."""
        change = await self.index.claims.change(name, version)
        if change is not None and change.action == REMOVE:
            raise Conflict(
                f"Release bundle {name}/{version} is being removed from this edge: undistribute it again"
                " to finish the removal, then distribute it"
            )

    async def _check_bundle_free(self, tx_id: str, name: str, version: str) -> None:
        """409 if the bundle's name and version hold another manifest on this edge."""
        other = await self.store.bundle(name, version)
        if other is not None and other.manifest_sha256 != tx_id:
            raise Conflict(f"Release bundle {name}/{version} is already on this edge with another manifest")

    async def missing_page(
        self, tx: Transaction, after: str = "", limit: int = protocol.MISSING_PAGE
    ) -> tuple[list[str], str | None]:
        """Up to ``limit`` of the transaction's distinct blobs after ``after`` (in sha256 order) that
        this edge does not hold yet, from any bundle or upload, and where the next page starts
        (None: nowhere, these are the last). Only an OPEN or COMMITTED transaction misses any.

        For an OPEN one, a blob some index entry references, or one a transaction recorded as
        stored, counts as held (edge/held.py); for a COMMITTED one only the blob store's word
        counts, for its own entries reference all of its blobs whether the store still holds
        them or not."""
        if tx.state not in (State.OPEN, State.COMMITTED):
            return [], None
        found: list[str] = []
        while blobs := await self.store.blob_page(tx.id, after):
            held = await self.held.held(blobs, stored=tx.state is State.COMMITTED)
            for sha256 in blobs:
                if sha256 not in held:
                    found.append(sha256)
                    if len(found) == limit:
                        return found, sha256
            after = sha256
        return found, None

    async def published(self, tx: Transaction) -> Published:
        """What the edge serves of a committed bundle: each path the bundle claims whose index
        entry is there and whose blob the store holds whole, and the digest of that list
        (wire/published.py), for the Distribution service to compare with the manifest's; read
        a page at a time, in the list's order."""
        digest = PublishedDigest()
        for repo in await self.store.published_repos(tx.name, tx.version):
            after = ""
            while rows := await self.store.published_page(tx.name, tx.version, repo, after):
                held = await self.artifacts.storage.sizes(sorted({sha256 for _, sha256, _ in rows}))
                served = [(f"{repo}/{path}", sha256, size) for path, sha256, size in rows if held.get(sha256) == size]
                await asyncio.to_thread(digest.add, served)
                after = rows[-1][0]
        return Published(digest.files, digest.bytes, digest.hexdigest())

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
            await self._verify_stored(tx)  # its key may have been removed since start
            # The blobs are pinned by the OPEN transaction (EdgeStore.pinned), so nothing collects
            # one between this check and the page that indexes it.
            missing, more = await self.missing_page(tx, limit=NAMED_MISSING)
            if missing:
                raise Conflict(f"Cannot commit: blob(s) missing: {listed(missing)}{', ...' if more else ''}")
            await self.artifacts.storage.sync()  # every blob's name durable before an entry names it
            repos = await self.files.repos(tx_id)
            await self.index.publish(tx, repos, self.files.pages(tx_id), user, now_ms())
            log.info("transaction %s committed: %s/%s, %d files", tx_id, tx.name, tx.version, tx.files)
        await self.staging.free(tx_id)
        await self.files.drop(tx_id)
        return await self.get(tx_id)

    async def _verify_stored(self, tx: Transaction) -> None:
        """Check the signature of a transaction's stored manifest again, against a copy in staging."""
        copy = await self.staging.scratch()
        try:
            try:
                await self.store.manifest_to(tx.id, copy)
            except OSError as exc:
                raise os_storage_error(exc, "copying the manifest to staging failed") from None  # full: a 507
            await self.trust.verify(copy, await self.store.signature(tx.id))
        finally:
            await asyncio.to_thread(copy.unlink, True)

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
        await self.files.drop(tx_id)
        async for page in self.store.blob_pages(tx_id):
            await self.artifacts.collect(page)

    # -- bundles ------------------------------------------------------------------

    async def bundles(self) -> list[ReceivedBundle]:
        return await self.store.bundles()

    async def sbom(self, name: str, version: str) -> ManifestSbom:
        """The SBOM of a bundle on this edge; 404 for an unknown bundle or one whose manifest names none."""
        sbom = await self.sboms.of_bundle(name, version)
        if sbom is None:
            if await self.store.bundle(name, version) is None:
                raise NotFound(f"No release bundle {name}/{version} on this edge")
            raise NotFound(f"Release bundle {name}/{version} has no SBOM (its manifest names none)")
        return sbom

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
        if sweep_staging:  # another worker's start may be recording files, and staging its manifest
            await self.files.sweep()
            await self.staging.sweep(await self.store.open_ids())

    async def expire_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except Exception:  # the next round tries again
                log.exception("expiring transactions failed")
