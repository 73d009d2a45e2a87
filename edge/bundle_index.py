"""A bundle's index entries on this edge: published at commit and removed at delete, a page at a
time, each shown or hidden whole in one short transaction (``repository.bulk``).

A commit indexes the manifest's entries a page at a time, hidden, with the bundle's claims
on their paths; then one transaction shows them all, marks the transaction committed and
lists the bundle. A removal first hands the paths another bundle claims too to that bundle,
then in one transaction hides every entry of the bundle and takes it off the list; then it
deletes the entries a page at a time, collecting the blobs nothing references any more
after each page, and gives the freed database pages back. A removal asked with a limit
stops after that many files and answers how far it got; asked again, it goes on. Downloads,
uploads and status reads never wait for more than a page, and never see part of a bundle.

One change runs at a time on this node. A crash leaves the work recorded (``edge.claims``):
at start-up a commit cut short is rolled back (the Distribution service commits again), a
removal is finished.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial

from repository import bulk
from repository.artifacts import ArtifactService, guess_mime_type
from repository.bulk import new_key
from repository.catalog import Artifact, Repo
from repository.errors import NotFound
from wire.protocol import Removal

from .claims import COMMIT, REMOVE, BundleChange, BundleClaims
from .sbom_store import SbomStore
from .store import EdgeStore, Transaction
from .transaction_files import TransactionFile

log = logging.getLogger(__name__)


def split_target(target: str) -> tuple[str, str]:
    repo, _, path = target.partition("/")
    return repo, path


def entries(files: Sequence[TransactionFile], owner: str, user: str, now: int) -> list[Artifact]:
    """The index entries of some of a manifest's files."""
    made = []
    for f in files:
        made.append(
            Artifact(repo=f.repo, path=f.path, sha256=f.sha256, sha1=f.sha1, md5=f.md5, size=f.size,
                     mime_type=guess_mime_type(f.path), created=now, created_by=user, modified=now,
                     modified_by=user, owner=owner, properties=f.properties)
        )  # fmt: skip
    return made


class BundleIndex:
    def __init__(self, store: EdgeStore, claims: BundleClaims, artifacts: ArtifactService) -> None:
        self.store = store
        self.claims = claims
        self.artifacts = artifacts
        self.bulk = artifacts.catalog.bulk
        self.sboms = SbomStore(store.database)
        self._lock = store.database.locks("bundle-change")  # one bundle change at a time, in every worker

    async def publish(
        self, tx: Transaction, repos: list[str], files: AsyncIterator[list[TransactionFile]], user: str, now: int
    ) -> None:
        """Index every file of ``tx``'s manifest (in ``repos``, a page at a time from ``files``) and
        commit it, shown all at once; refused (409) anywhere, what was indexed is removed again and
        nothing shows."""
        async with self._lock():
            change = BundleChange(tx.name, tx.version, tx.id, COMMIT, new_key())
            created = [Repo(key, anonymous_read=True) for key in repos]

            def begin() -> None:
                self.store.check_committable_rows(tx)
                self.claims.begin_rows(change)

            await self.bulk.begin_publish(change.bulk_key, tx.owner, created, extra=begin)
            try:
                async for page in files:
                    made = entries(page, tx.owner, user, now)
                    claim = partial(self.claims.claim_rows, tx, [(e.repo, e.path) for e in made])
                    await self.bulk.publish_page(change.bulk_key, made, extra=claim)

                def commit() -> None:
                    self.store.commit_rows(tx, now)
                    self.claims.end_rows(change)

                await self.bulk.finish(change.bulk_key, extra=commit)
            except BaseException:
                await self._abandon(change)
                raise

    async def _abandon(self, change: BundleChange) -> None:
        """Remove what a commit cut short had indexed, and its claims; the transaction stays OPEN.
        A commit that went through after all (its last step finished as the wait for it was
        cancelled) has no change recorded any more, and stays."""
        if await self.claims.change(change.name, change.version) != change:
            return
        while paths := await self.claims.first_claims(change.name, change.version):
            drop = partial(self.claims.drop_claim_rows, change, paths)
            await self.bulk.remove_page(change.owner, paths, key=change.bulk_key, extra=drop)
        await self.bulk.end_abandoned(change.bulk_key, extra=partial(self.claims.end_rows, change))
        log.info("commit of %s/%s cut short: what it had indexed is removed", change.name, change.version)

    async def remove(self, name: str, version: str, limit: int | None = None) -> Removal:
        """Take a committed bundle off this edge, or go on taking it off: at most ``limit`` of its
        files per call (None: all of them), answering how far it has got; 404 if it is not here."""
        async with self._lock():
            change = await self.claims.change(name, version)
            if change is None or change.action != REMOVE:
                bundle = await self.store.bundle(name, version)
                if bundle is None:
                    raise NotFound(f"No release bundle {name}/{version} on this edge")
                change = BundleChange(name, version, bundle.manifest_sha256, REMOVE, new_key())
                async for shared in self.claims.shared_claims(name, version):
                    await self.bulk.reassign(change.owner, shared)
                begin = partial(self.claims.begin_removal_rows, change)
                await self.bulk.begin_unpublish(change.bulk_key, change.owner, extra=begin)
            return await self._removal_step(change, limit)

    async def _removal_step(self, change: BundleChange, limit: int | None) -> Removal:
        """Delete up to ``limit`` (None: all) of a hidden bundle's entries and claims, a page at a
        time, collecting after each page; once none is left, its transaction, and the database
        pages this freed. The count of claims left says how far the removal is, whoever did the
        pages before (an earlier request, or one a crash cut short)."""
        budget = limit
        while budget is None or budget > 0:
            size = bulk.PAGE if budget is None else min(bulk.PAGE, budget)
            paths = await self.claims.first_claims(change.name, change.version, size)
            if not paths:
                break
            drop = partial(self.claims.drop_claim_rows, change, paths)
            gone = await self.bulk.remove_page(change.owner, paths, extra=drop)
            await self.artifacts.collect(gone)
            budget = None if budget is None else budget - len(paths)
        left, total = await self.claims.removal_progress(change)
        if left:
            total = max(total, left)  # a transaction row gone (it never is before the end) says nothing
            return Removal(total - left, total)
        sbom = await self.sboms.of_transaction(change.transaction_id)
        while await self.claims.drop_transaction_blobs(change.transaction_id):
            pass
        await self.bulk.finish(change.bulk_key, extra=partial(self.claims.end_removal_rows, change))
        if sbom is not None:  # named by no entry: collected once its transaction no longer lists it
            await self.artifacts.collect([sbom.sha256])
        await self.bulk.reclaim()
        log.info("bundle %s/%s removed: %d files", change.name, change.version, total)
        return Removal(total, total)

    async def resume(self) -> None:
        """At start-up: roll back each commit a crash cut short, and finish each removal."""
        async with self._lock():
            for change in await self.claims.changes():
                if change.action == COMMIT:
                    await self._abandon(change)
                else:
                    await self._removal_step(change, None)
