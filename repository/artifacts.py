"""Artifact operations both services share: look up, deploy, deploy by checksum, delete.

The ordering rule that keeps storage and catalog consistent: a blob is committed
(whole) before any index entry points at it, and a blob is collected only after
the last entry pointing at it is gone and no pin holds it. Pins are the holders of
blobs outside the index: a stored bundle version on the Distribution service, a
transaction in flight or a committed bundle on an edge. One lock orders "index or
pin a blob" against "collect a blob" in every process of the node, so a delete never removes
bytes that a concurrent deploy or bundle of the same content is about to reference.
Collecting holds that lock one page of blobs at a time, so a deploy waits for a page at
most, never for the whole of a big collect.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from storage_backends import (
    BlobInfo,
    BlobNotFound,
    BlobsNotDeleted,
    DigestMismatch,
    Digests,
    StorageBackend,
    StorageError,
)

from .catalog import Artifact, Catalog, Folder, check_owner, now_ms
from .errors import BadRequest, ChecksumMismatch, Conflict, NotFound, PayloadTooLarge, ServiceUnavailable
from .permissions import Readable
from .policy import ArtifactPolicy
from .quarantine import BlobQuarantined, Quarantine, QuarantinedBlob

log = logging.getLogger(__name__)

UPLOAD_OWNER = "upload"
# What a checksum deploy answers when no file the caller may read has those bytes: the same
# whether nobody has them or only files the caller may not read do (no existence oracle).
CHECKSUM_UNKNOWN = "Checksum deploy failed: no artifact with that checksum exists; send the content"

# A blob written but not yet indexed (a deploy between its commit and its index entry) is
# unreferenced for a moment: the sweep leaves alone every blob younger than this.
SWEEP_GRACE = timedelta(hours=1)
# Blobs of the store's listing judged (and collected) at once, each page under the index lock.
SWEEP_PAGE = 500

T = TypeVar("T")
# Blobs checked and deleted per hold of the index lock.
COLLECT_PAGE = 250
# Blobs a failed delete left behind that the next collect tries again (the sweep finds the rest).
UNCOLLECTED_KEPT = 100_000
# Answers which of these blobs it holds outside the index; runs whenever a blob may be collected.
BlobPin = Callable[[list[str]], Awaitable[set[str]]]


def guess_mime_type(path: str) -> str:
    return mimetypes.guess_type(path, strict=False)[0] or "application/octet-stream"


# Told of every blob taken out of service, with the paths that name it (the audit, the metrics).
QuarantineHook = Callable[[QuarantinedBlob, list[tuple[str, str]]], None]


class ArtifactService:
    def __init__(
        self, catalog: Catalog, storage: StorageBackend, policy: ArtifactPolicy, quarantined: Quarantine
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.policy = policy
        self.quarantined = quarantined
        self.on_quarantine: list[QuarantineHook] = []
        # in every process serving the node: a worker's collect must not race another's deploy
        self._index_lock = catalog.database.locks("index")
        # blobs a collect could not delete (the store failed): tried again by the next collect;
        # beyond UNCOLLECTED_KEPT, and after a restart, the sweep finds them in the store itself
        self._uncollected: set[str] = set()
        self._pins: list[BlobPin] = []

    def pin_with(self, pin: BlobPin) -> None:
        """Add a holder of blobs outside the index: a blob it answers for is never collected."""
        self._pins.append(pin)

    async def file(self, repo: str, path: str) -> Artifact:
        artifact = await self.catalog.get_artifact(repo, path) if path else None
        if artifact is None:
            raise NotFound()
        return artifact

    async def item(self, repo: str, path: str) -> Artifact | Folder:
        """A file or a folder at ``path``; NotFound when the repo or the path is unknown."""
        artifact = await self.catalog.get_artifact(repo, path) if path else None
        if artifact is not None:
            return artifact
        folder = await self.catalog.get_folder(repo, path)
        if folder is None:
            raise NotFound()
        return folder

    async def _writable_repo(self, repo: str) -> None:
        self.policy.check_writable(repo)
        if await self.catalog.get_repo(repo) is None:
            raise NotFound(f"Repository '{repo}' does not exist")

    async def deploy(
        self,
        repo: str,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        expected: Mapping[str, str],
        declared_size: int | None,
        user: str,
        properties: Mapping[str, list[str]] | None = None,
    ) -> Artifact:
        """Stream a body into a blob, verify it against the client's checksums, index it."""
        await self._writable_repo(repo)
        held = await self.catalog.get_artifact(repo, path)
        if held is not None:  # refused before the body is stored; _index decides again, atomically
            check_owner(held, UPLOAD_OWNER)
        limit = self.policy.max_upload_bytes
        if declared_size is not None and declared_size > limit:
            raise PayloadTooLarge(f"Request body of {declared_size} bytes exceeds the limit of {limit} bytes")
        async with await self.storage.writer() as writer:
            async for chunk in chunks:
                if writer.size + len(chunk) > limit:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
                await writer.write(chunk)
            if declared_size is not None and writer.size != declared_size:
                raise BadRequest("Request body is shorter than its Content-Length")
            try:
                digests = await writer.commit(expected=expected)
            except DigestMismatch as exc:
                raise ChecksumMismatch(
                    f"Checksum mismatch: client sent {exc.field} {exc.expected}, received content has {exc.actual}"
                ) from None
        return await self._index(repo, path, digests, user, properties)

    async def make_folder(self, repo: str, path: str, user: str) -> Folder:
        await self._writable_repo(repo)
        return await self.catalog.make_folder(repo, path, user)

    async def deploy_by_checksum(
        self,
        repo: str,
        path: str,
        *,
        expected: Mapping[str, str],
        user: str,
        readable: Readable,
        properties: Mapping[str, list[str]] | None = None,
    ) -> Artifact:
        """Index bytes the node already holds, found by sha256 (else sha1), without a body.

        Only bytes the caller may read at some path (``readable``): otherwise a deployer could
        copy a file it may not read into a repo it may, or learn from the answer that some
        bytes exist. A holder the caller may not read counts as none: the answer is the 404 a
        checksum nobody has gets, word for word.
        """
        await self._writable_repo(repo)
        algorithm = "sha256" if "sha256" in expected else "sha1"
        known = None
        async with aclosing(self.catalog.holders(algorithm, expected[algorithm])) as holders:
            async for holder in holders:
                if any(getattr(holder, k) != v.lower() for k, v in expected.items()):
                    continue
                where = await self.catalog.get_repo(holder.repo)
                if where is not None and readable(where, holder.path):
                    known = holder
                    break
        if known is None:
            raise NotFound(CHECKSUM_UNKNOWN)
        digests = Digests(size=known.size, sha256=known.sha256, sha1=known.sha1, md5=known.md5)
        return await self._index(repo, path, digests, user, properties)

    async def index_fetched(self, repo: str, path: str, digests: Digests, user: str, owner: str) -> Artifact:
        """Index a blob fetched from elsewhere (a remote repo's cache, owned by ``owner``), already
        verified and stored; the bytes it replaces at ``path`` are collected if nothing else holds them."""
        return await self._index(repo, path, digests, user, None, owner)

    async def _index(
        self,
        repo: str,
        path: str,
        digests: Digests,
        user: str,
        properties: Mapping[str, list[str]] | None,
        owner: str = UPLOAD_OWNER,
    ) -> Artifact:
        """Index the bytes at ``path`` with ``properties`` (a deploy's matrix parameters): an
        overwrite keeps none of the old file's properties, as a new deploy starts afresh."""
        assert digests.sha1 is not None and digests.md5 is not None
        now = now_ms()
        artifact = Artifact(
            repo=repo,
            path=path,
            sha256=digests.sha256,
            sha1=digests.sha1,
            md5=digests.md5,
            size=digests.size,
            mime_type=guess_mime_type(path),
            created=now,
            created_by=user,
            modified=now,
            modified_by=user,
            owner=owner,
            properties=dict(properties or {}),
        )
        async with self._index_lock():
            if not await self.storage.exists(digests.sha256):
                if await self.quarantined.among([digests.sha256]):  # a checksum deploy of damaged bytes
                    raise NotFound("Checksum deploy failed: the stored bytes are quarantined; send the content")
                # Collected between commit and here by a delete of the same bytes.
                raise ServiceUnavailable("The stored content vanished during the deploy; retry it")
            previous = await self.catalog.get_artifact(repo, path)
            try:
                stored = await self.catalog.put_artifact(artifact)
            except BaseException:
                await self._collect([digests.sha256])
                raise
            if previous is not None and previous.sha256 != stored.sha256:  # overwritten: its old bytes may go
                await self._collect([previous.sha256])
        await self.restored([digests.sha256])
        return stored

    async def delete(self, repo: str, path: str) -> list[Artifact]:
        """Remove a file or a folder tree from the index, then collect unreferenced blobs."""
        await self._writable_repo(repo)
        removed = await self.catalog.delete(repo, path, owner=UPLOAD_OWNER)
        await self.collect({a.sha256 for a in removed})
        return removed

    def servable_from_memory(self, repo: str, path: str) -> Artifact | None:
        """The file when memory alone shows it is there and servable (its entry held, its blob
        surely not quarantined): a download's usual case, answered without a coroutine. None
        means ``file`` and ``servable`` must decide."""
        artifact = self.catalog.cached_artifact(repo, path) if path else None
        if artifact is None or not self.quarantined.surely_clear(artifact.sha256):
            return None
        return artifact

    async def servable(self, artifact: Artifact) -> None:
        """BlobQuarantined (409) for a file whose blob is out of service: never its damaged bytes."""
        if self.quarantined.surely_clear(artifact.sha256):
            return
        if await self.quarantined.among([artifact.sha256]):
            blob = await self.quarantined.get(artifact.sha256)
            raise BlobQuarantined(f"{artifact.repo}/{artifact.path}", blob.reason if blob else "quarantined")

    async def quarantine(
        self, sha256: str, size: int, reason: str, seen: BlobInfo | None = None
    ) -> QuarantinedBlob | None:
        """Take a blob out of service: its bytes moved aside by the store (none when the store has
        lost it), and every path that names it answering 409 until the right bytes are stored
        again (``restored``). ``seen``: the copy found damaged; if the store holds another by
        now (deleted and written afresh meanwhile), nothing is done and None answered."""
        async with self._index_lock():
            try:
                held: BlobInfo | None = await self.storage.stat(sha256)
            except BlobNotFound:
                held = None
            if seen is not None and (held is None or (held.size, held.modified) != (seen.size, seen.modified)):
                return None
            # recorded before the bytes move: a crash in between leaves it held back, never served
            blob = QuarantinedBlob(sha256, size, now_ms(), reason, None)
            await self.quarantined.add(blob)
            if held is not None:
                blob = replace(blob, location=await self.storage.quarantine(sha256))
                await self.quarantined.add(blob)
        paths = await self.quarantined.paths(sha256)
        log.error(
            "blob %s quarantined: %s; %s; %d path(s) answer 409 until its bytes are restored: %s",
            sha256,
            reason,
            f"its bytes were moved to {blob.location}" if blob.location else "there were no bytes to keep",
            len(paths),
            ", ".join(f"{repo}/{path}" for repo, path in paths[:10]),
        )
        for hook in self.on_quarantine:
            hook(blob, paths)
        return blob

    async def restored(self, sha256s: Iterable[str]) -> None:
        """These blobs are stored whole again: those that were quarantined serve again."""
        for sha256 in await self.quarantined.release(sha256s):
            log.info("blob %s restored: its paths are served again", sha256)

    async def keep(self, sha256s: Collection[str], record: Callable[[], Awaitable[T]]) -> T:
        """Run ``record``, which pins ``sha256s`` (stores a bundle version, say), once every one
        of them is confirmed still held; under the index lock, so no collect runs in between.
        A blob deleted since the caller found it is a 409: the caller looks again."""
        wanted = sorted(set(sha256s))

        async def one_page() -> AsyncIterator[list[str]]:
            yield wanted

        return await self.keep_pages(one_page, record)

    async def keep_pages(self, pages: Callable[[], AsyncIterator[list[str]]], record: Callable[[], Awaitable[T]]) -> T:
        """``keep`` for blobs read a page at a time from ``pages()`` (a bundle's, from the
        database), so that however many there are, they are never all in memory at once."""
        async with self._index_lock():
            async for page in pages():
                held = await self._held(page)
                if gone := [s for s in page if s not in held]:
                    raise Conflict(f"Content was deleted meanwhile (sha256 {', '.join(gone[:3])}); retry")
            return await record()

    async def collect(self, sha256s: Iterable[str]) -> None:
        """Delete those of these blobs that no index entry references and no pin holds (staged
        bundle blobs of an aborted transaction, say), holding the index lock a page at a time.
        Blobs an earlier collect could not delete are tried again with them."""
        wanted = sorted(set(sha256s) | self._uncollected)
        self._uncollected.clear()
        for start in range(0, len(wanted), COLLECT_PAGE):
            async with self._index_lock():
                await self._collect(wanted[start : start + COLLECT_PAGE])

    async def sweep(self, grace: timedelta = SWEEP_GRACE) -> int:
        """Delete the stored blobs that nothing references or pins and that were written more than
        ``grace`` ago; answers how many. Collecting follows the index, so a process killed between
        an index change and its collect (an undistribute, a delete) leaves unreferenced blobs that
        only a walk over the store itself finds. The store is listed a page at a time, and each
        page is judged and collected under the index lock, as a collect is."""
        swept = 0
        page: list[str] = []
        async with aclosing(self.storage.list()) as names:
            async for sha256 in names:
                page.append(sha256)
                if len(page) == SWEEP_PAGE:
                    swept += await self._sweep_page(page, grace)
                    page = []
        if page:
            swept += await self._sweep_page(page, grace)
        return swept

    async def _sweep_page(self, sha256s: list[str], grace: timedelta) -> int:
        wanted = sorted(sha256s)
        async with self._index_lock():
            held = await self._held(wanted)
            old = []
            for sha256 in (s for s in wanted if s not in held):
                try:
                    info = await self.storage.stat(sha256)
                except BlobNotFound:
                    continue
                if datetime.now(UTC) - info.modified >= grace:
                    old.append(sha256)
            await self._collect(old)
        if old:
            log.info("sweep: %d blobs referenced by nothing were deleted, the first %s", len(old), old[0])
        return len(old)

    async def _held(self, sha256s: list[str]) -> set[str]:
        """Those of ``sha256s`` that an index entry references or a pin holds."""
        held = set(await self.catalog.blob_sizes(sha256s))
        for pin in self._pins:
            rest = [s for s in sha256s if s not in held]
            if not rest:
                break
            held |= await pin(rest)
        return held

    async def _collect(self, sha256s: Collection[str]) -> None:
        """Delete the blobs of these that nothing references or pins. Called with the index lock
        held, for a page of blobs at most (``collect``)."""
        wanted = sorted(sha256s)
        held = await self._held(wanted)
        unheld = [sha256 for sha256 in wanted if sha256 not in held]
        if not unheld:
            return
        try:
            await self.storage.delete_many(unheld)  # one never stored, or already collected, is skipped
        except StorageError as exc:  # the index is already right: the next collect tries them again
            failed = exc.sha256s if isinstance(exc, BlobsNotDeleted) else unheld
            room = max(0, UNCOLLECTED_KEPT - len(self._uncollected))
            self._uncollected.update(failed[:room])
            log.warning("could not collect %d of %d blobs, tried again by the next collect: %s",
                        len(failed), len(unheld), exc)  # fmt: skip
