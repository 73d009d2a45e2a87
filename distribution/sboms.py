"""Bundles' SBOMs in the service: built from what a create staged, stored as a blob, read back.

The document itself is ``distribution.sbom``'s; this module feeds it the staged artifacts (a
page at a time from the database, into the one list the library needs), reads each file
named like an SBOM from the blob store (bounded by ``sbom_embedded_max_bytes``), and writes
the result as a content-addressed blob, which ``BundleStore.commit_staged`` then records
with the bundle.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass

from cyclonedx.model.bom import Bom

from repository.errors import NotFound
from storage_backends.base import StorageBackend
from wire.manifest import ManifestSbom

from .bundle_store import Bundle, BundleArtifact, BundleStore
from .sbom import (
    BundleIdentity,
    EmbeddedSbomRefused,
    build_sbom,
    check_component_budget,
    looks_embedded,
    parse_embedded,
)


@dataclass(frozen=True)
class SbomLimits:
    max_bytes: int
    embedded_max_bytes: int


class BundleSboms:
    def __init__(self, store: BundleStore, storage: StorageBackend, limits: SbomLimits) -> None:
        self.store = store
        self.storage = storage
        self.limits = limits

    async def build(self, bundle: Bundle, token: str) -> bytes:
        """The SBOM of the bundle whose artifacts are staged under ``token``; refused (400) over the
        limits, before anything of the bundle is stored."""
        check_component_budget(bundle.artifacts_count, self.limits.max_bytes)
        artifacts: list[BundleArtifact] = []
        embedded: dict[str, Bom] = {}
        async for page in self.store.staged_pages(token):
            for artifact in page:
                if looks_embedded(artifact.target):
                    found = await self._embedded(artifact)
                    if found is not None:
                        embedded[artifact.target] = found
            artifacts.extend(page)
        identity = BundleIdentity(bundle.name, bundle.version, bundle.created)
        return await asyncio.to_thread(build_sbom, identity, artifacts, embedded, self.limits.max_bytes)

    async def _embedded(self, artifact: BundleArtifact) -> Bom | None:
        limit = self.limits.embedded_max_bytes
        if artifact.size > limit:
            raise EmbeddedSbomRefused(
                f"Embedded SBOM {artifact.target} is {artifact.size} bytes, over the limit of {limit} bytes"
                " (setting sbom_embedded_max_bytes); rename it or raise the limit"
            )
        async with aclosing(await self.storage.read(artifact.sha256, 0, artifact.size)) as chunks:
            data = b"".join([chunk async for chunk in chunks])
        return await asyncio.to_thread(parse_embedded, artifact.target, data)

    async def save(self, data: bytes) -> ManifestSbom:
        """Store the SBOM as a blob; the caller records it with its bundle (which pins it)."""
        async with await self.storage.writer(all_digests=False) as writer:
            await writer.write(data)
            digests = await writer.commit(expected_size=len(data))
        return ManifestSbom(digests.sha256, digests.size)

    async def find(self, name: str, version: str) -> ManifestSbom:
        """The bundle's SBOM (the bundle exists); 404 for one made before SBOMs existed."""
        sbom = await self.store.sbom(name, version)
        if sbom is None:
            raise NotFound(f"Release bundle {name}/{version} has no SBOM (it was created before SBOMs were built)")
        return sbom
