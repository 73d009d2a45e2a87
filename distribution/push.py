"""One attempt of one job: push a signed bundle to an edge (start, upload, commit, verify), or delete it there.

Only the blobs the edge says it is missing cross the wire, streamed from the storage
backend. A large blob interrupted mid-way resumes from the last byte the edge holds.
Progress is counted per file as blobs land; blobs the edge already held count as
distributed at once. Nothing is held per file of the bundle: the missing blobs are looked
up in the database and sent a page at a time, and the verification reads the bundle's
files a page at a time.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from storage_backends import StorageBackend
from transfer.client import EdgeCallError, EdgeClient, EdgeGarbage, EdgeRefused, EdgeServerError, ManifestSource
from transfer.sending import BlobSender
from wire.protocol import Removal, TransactionState
from wire.published import PublishedDigest

from .bundle_store import BundleArtifact, BundleBlob, BundleStore
from .jobs import Job

# Missing blobs looked up in the database and sent as one group: bounds what a push holds.
MISSING_PAGE = 10_000


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
            await self._sender().upload_all(tx, page, {s: b.size for s, b in self._blobs.items()})
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

    def _landed(self, sha: str, sent: bool) -> None:
        blob = self._blobs.get(sha)
        if blob is not None:
            self.progress.landed(blob, sent=sent)

    def _sender(self) -> BlobSender:
        return BlobSender(
            self.client,
            self.storage,
            self.blob_concurrency,
            self.progress.on_bytes,
            self._landed,
            self._target,
            self.progress.uploading,
        )

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
