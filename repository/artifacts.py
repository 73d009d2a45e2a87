"""Artifact operations both services share: look up, deploy, deploy by checksum, delete.

The ordering rule that keeps storage and catalog consistent: a blob is committed
(whole) before any index entry points at it, and a blob is collected only after
the last entry pointing at it is gone. One lock orders "index a blob" against
"collect a blob" in this process, so a delete never removes bytes that a
concurrent deploy of the same content is about to reference.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from storage_backends import BlobInfo, BlobNotFound, DigestMismatch, Digests, StorageBackend, StorageError

from .catalog import Artifact, Catalog, Folder, Repo, now_ms
from .errors import BadRequest, ChecksumMismatch, NotFound, PayloadTooLarge, ServiceUnavailable
from .policy import ArtifactPolicy
from .quarantine import BlobQuarantined, Quarantine, QuarantinedBlob

log = logging.getLogger(__name__)

UPLOAD_OWNER = "upload"


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
        self._index_lock = asyncio.Lock()

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
    ) -> Artifact:
        """Stream a body into a blob, verify it against the client's checksums, index it."""
        await self._writable_repo(repo)
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
        return await self._index(repo, path, digests, user)

    async def make_folder(self, repo: str, path: str, user: str) -> Folder:
        await self._writable_repo(repo)
        return await self.catalog.make_folder(repo, path, user)

    async def deploy_by_checksum(self, repo: str, path: str, *, expected: Mapping[str, str], user: str) -> Artifact:
        """Index bytes the node already holds, found by sha256 or sha1, without a body."""
        await self._writable_repo(repo)
        known = None
        for algorithm in ("sha256", "sha1"):
            if algorithm in expected:
                known = await self.catalog.find_by_checksum(algorithm, expected[algorithm])
                break
        if known is None or any(getattr(known, k) != v.lower() for k, v in expected.items()):
            raise NotFound("Checksum deploy failed: no artifact with that checksum exists; send the content")
        digests = Digests(size=known.size, sha256=known.sha256, sha1=known.sha1, md5=known.md5)
        return await self._index(repo, path, digests, user)

    async def _index(self, repo: str, path: str, digests: Digests, user: str) -> Artifact:
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
            owner=UPLOAD_OWNER,
        )
        async with self._index_lock:
            if not await self.storage.exists(digests.sha256):
                if await self.quarantined.among([digests.sha256]):  # a checksum deploy of damaged bytes
                    raise NotFound("Checksum deploy failed: the stored bytes are quarantined; send the content")
                # Collected between commit and here by a delete of the same bytes.
                raise ServiceUnavailable("The stored content vanished during the deploy; retry it")
            try:
                stored = await self.catalog.put_artifact(artifact)
            except BaseException:
                await self._collect(digests.sha256)
                raise
        await self.restored([digests.sha256])
        return stored

    async def delete(self, repo: str, path: str) -> list[Artifact]:
        """Remove a file or a folder tree from the index, then collect unreferenced blobs."""
        await self._writable_repo(repo)
        async with self._index_lock:
            removed = await self.catalog.delete(repo, path)
            for sha256 in {a.sha256 for a in removed}:
                await self._collect(sha256)
        return removed

    async def publish(
        self,
        artifacts: list[Artifact],
        repos: list[Repo],
        *,
        check: Callable[[], Awaitable[None]] | None = None,
        extra: Callable[[], None] | None = None,
    ) -> None:
        """Index many blobs in one database transaction (a bundle commit; see ``Catalog.publish``).

        ``check`` runs first under the index lock (say, "every blob is in storage"), so no
        collect can remove a blob between that check and the index entries that keep it.
        """
        async with self._index_lock:
            if check is not None:
                await check()
            await self.catalog.publish(artifacts, repos, extra=extra)

    async def unpublish(
        self,
        owner: str,
        paths: list[tuple[str, str]],
        reassign: Mapping[tuple[str, str], str],
        *,
        extra: Callable[[], None] | None = None,
    ) -> list[Artifact]:
        """Remove an owner's entries in one database transaction (``Catalog.unpublish``), then
        collect the blobs nothing references any more."""
        async with self._index_lock:
            removed = await self.catalog.unpublish(owner, paths, reassign, extra=extra)
            for sha256 in {a.sha256 for a in removed}:
                await self._collect(sha256)
        return removed

    async def servable(self, artifact: Artifact) -> None:
        """BlobQuarantined (409) for a file whose blob is out of service: never its damaged bytes."""
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
        async with self._index_lock:
            try:
                held: BlobInfo | None = await self.storage.stat(sha256)
            except BlobNotFound:
                held = None
            if seen is not None and (held is None or (held.size, held.modified) != (seen.size, seen.modified)):
                return None
            location = await self.storage.quarantine(sha256) if held is not None else None
            blob = QuarantinedBlob(sha256, size, now_ms(), reason, location)
            await self.quarantined.add(blob)
        paths = await self.quarantined.paths(sha256)
        log.error(
            "blob %s quarantined: %s; %s; %d path(s) answer 409 until its bytes are restored: %s",
            sha256,
            reason,
            f"its bytes were moved to {location}" if location else "there were no bytes to keep",
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

    async def collect(self, sha256s: Iterable[str]) -> None:
        """Delete those of these blobs that no index entry references (staged bundle blobs
        of an aborted transaction, say)."""
        async with self._index_lock:
            for sha256 in set(sha256s):
                await self._collect(sha256)

    async def _collect(self, sha256: str) -> None:
        """Delete a blob no index entry points at. Called with the index lock held."""
        if await self.catalog.is_referenced(sha256):
            return
        try:
            await self.storage.delete(sha256)
        except BlobNotFound:  # never stored, or already collected: nothing to do
            return
        except StorageError as exc:  # left for a later sweep; the index is already right
            log.warning("could not collect blob %s: %s", sha256, exc)
