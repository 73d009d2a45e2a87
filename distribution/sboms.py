"""Bundles' SBOMs in the service: built from what a create staged, in a process of their own,
streamed into the blob store.

The document itself is ``distribution.sbom``'s, built by ``distribution.sbom_worker`` in a
child process: the library's objects for a bundle of many files never live in the service,
whose memory stays flat in the bundle's size, and its pure-Python work never holds the
service's GIL. The service feeds the worker the staged artifacts a page at a time (and each
file named like an SBOM, read from the blob store up to ``sbom_embedded_max_bytes``), and
writes what comes back straight into a blob, which ``BundleStore.commit_staged`` then records
with the bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from dataclasses import dataclass

from repository.errors import BadRequest, NotFound
from repository.together import together
from storage_backends.base import BlobWriter, StorageBackend
from wire.manifest import ManifestSbom

from .bundle_store import Bundle, BundleArtifact, BundleStore
from .sbom import BundleIdentity, EmbeddedSbomRefused, SbomTooLarge, check_component_budget, looks_embedded
from .sbom_worker import REFUSED, artifact_line, request_line

READ_CHUNK = 256 * 1024
MAX_ERROR_BYTES = 64 * 1024  # of what the worker says when it fails


@dataclass(frozen=True)
class SbomLimits:
    max_bytes: int
    embedded_max_bytes: int


class BundleSboms:
    def __init__(self, store: BundleStore, storage: StorageBackend, limits: SbomLimits) -> None:
        self.store = store
        self.storage = storage
        self.limits = limits

    async def make(self, bundle: Bundle, token: str, *, keep: bool) -> ManifestSbom:
        """Build the SBOM of the bundle whose artifacts are staged under ``token`` and, with ``keep``,
        store it as a blob (the caller records it with the bundle, which pins it); its sha256 and
        size either way. Refused (400) over the limits, and then nothing is stored."""
        check_component_budget(bundle.artifacts_count, self.limits.max_bytes)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "distribution.sbom_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with contextlib.AsyncExitStack() as stack:  # a dry run opens no writer
                writer = await stack.enter_async_context(await self.storage.writer(all_digests=False)) if keep else None
                # the three conversations with the worker at once: a pipe left unread would stall it
                _, (sha256, size), said = await together(
                    self._feed(worker, bundle, token), self._receive(worker, writer), _bounded(worker.stderr)
                )
                code = await worker.wait()
                if code == REFUSED:
                    raise BadRequest(said.decode("utf-8", "replace"))
                if code != 0:
                    raise RuntimeError(f"the SBOM worker exited with status {code}: {said.decode(errors='replace')}")
                if writer is not None:
                    await writer.commit(expected={"sha256": sha256}, expected_size=size)
            return ManifestSbom(sha256, size)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    async def _feed(self, worker: asyncio.subprocess.Process, bundle: Bundle, token: str) -> None:
        """The bundle and its artifacts, a page at a time; a worker that ended early (it refused)
        stops the feed, and its answer says why."""
        stdin = worker.stdin
        assert stdin is not None
        try:
            stdin.write(
                request_line(BundleIdentity(bundle.name, bundle.version, bundle.created), self.limits.max_bytes)
            )
            async for page in self.store.staged_pages(token):
                for artifact in page:
                    embedded = await self._embedded(artifact) if looks_embedded(artifact.target) else None
                    stdin.write(artifact_line(artifact, embedded))
                await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            return

    async def _receive(self, worker: asyncio.subprocess.Process, writer: BlobWriter | None) -> tuple[str, int]:
        """The SBOM's bytes into ``writer`` (or only hashed), refused past ``max_bytes``: its sha256
        and size."""
        stdout = worker.stdout
        assert stdout is not None
        size, digest = 0, hashlib.sha256()
        while chunk := await stdout.read(READ_CHUNK):
            size += len(chunk)
            digest.update(chunk)
            if size > self.limits.max_bytes:
                raise SbomTooLarge(
                    f"The bundle's SBOM is over the limit of {self.limits.max_bytes} bytes (setting sbom_max_bytes)"
                )
            if writer is not None:
                await writer.write(chunk)
        return digest.hexdigest(), size

    async def _embedded(self, artifact: BundleArtifact) -> bytes:
        limit = self.limits.embedded_max_bytes
        if artifact.size > limit:
            raise EmbeddedSbomRefused(
                f"Embedded SBOM {artifact.target} is {artifact.size} bytes, over the limit of {limit} bytes"
                " (setting sbom_embedded_max_bytes); rename it or raise the limit"
            )
        async with contextlib.aclosing(await self.storage.read(artifact.sha256, 0, artifact.size)) as chunks:
            return b"".join([chunk async for chunk in chunks])

    async def find(self, name: str, version: str) -> ManifestSbom:
        """The bundle's SBOM (the bundle exists); 404 for one made before SBOMs existed."""
        sbom = await self.store.sbom(name, version)
        if sbom is None:
            raise NotFound(f"Release bundle {name}/{version} has no SBOM (it was created before SBOMs were built)")
        return sbom


async def _bounded(stream: asyncio.StreamReader | None) -> bytes:
    """What the worker says on standard error, the first ``MAX_ERROR_BYTES`` of it (read to the end)."""
    assert stream is not None
    kept = b""
    while chunk := await stream.read(READ_CHUNK):
        kept = (kept + chunk)[:MAX_ERROR_BYTES]
    return kept
