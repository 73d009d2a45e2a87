"""A bundle's signed manifest, made without holding it: encoded a page of artifacts at a time
into a spool file (hashed on the way), signed by gpg reading that file, and copied into the
database a chunk at a time. A 100,000-file manifest is some 30 MB; built as Python objects and
bytes it cost the service hundreds of MiB, and the cost grew with every file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from storage_backends import StorageFull
from storage_backends.errors import DISK_FULL_ERRNOS
from wire.manifest import Manifest, ManifestEncoder, ManifestSbom
from wire.timestamps import iso

from .bundle_store import Bundle, BundleArtifact, BundleStore
from .signing import KeyInfo, Signer


def manifest_header(bundle: Bundle, sbom: ManifestSbom | None = None) -> Manifest:
    """The bundle's manifest without its artifacts: what the encoder adds them to. ``sbom``: the
    bundle's SBOM, named in the manifest (None for a bundle made before SBOMs existed)."""
    return Manifest(
        name=bundle.name,
        version=bundle.version,
        created=iso(bundle.created),
        created_by=bundle.created_by,
        description=bundle.description,
        release_notes=bundle.release_notes,
        artifacts=(),
        sbom=sbom,
    )


async def write_manifest(store: BundleStore, bundle: Bundle, out: BinaryIO) -> tuple[int, str]:
    """Write the bundle's canonical manifest to ``out``, a page of artifacts at a time; answers
    its size and sha256. The encoder checks the artifacts as ``Manifest`` does (a ``ManifestError``
    if not), off the event loop: it costs per artifact."""
    encoder = ManifestEncoder(manifest_header(bundle, await store.sbom(bundle.name, bundle.version)))
    digest = hashlib.sha256()

    def write(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    def encode(page: list[BundleArtifact]) -> None:
        write(b"".join(encoder.add(a) for a in page))

    loop = asyncio.get_running_loop()
    # One thread for every page: the pages' short-lived buffers reuse one malloc arena rather
    # than leaving some behind in each of the default pool's threads.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest") as worker:
        write(encoder.start())
        async for page in store.artifact_pages(bundle.name, bundle.version):
            await loop.run_in_executor(worker, encode, page)
        write(encoder.finish())
    return encoder.size, digest.hexdigest()


async def sign_bundle(
    store: BundleStore, signer: Signer, bundle: Bundle, key: KeyInfo, spool_dir: Path, at: int
) -> bool:
    """Sign an OPEN bundle's manifest with ``key`` and store both; answers whether the bundle was
    still OPEN when stored (see ``BundleStore.mark_signed``)."""
    try:
        spool: BinaryIO = await asyncio.to_thread(tempfile.TemporaryFile, dir=spool_dir)
    except OSError as exc:
        raise _full(exc, spool_dir) from exc
    try:
        try:
            size, sha256 = await write_manifest(store, bundle, spool)
            spool.flush()  # a full disk shows here at the latest, not at the seek below
        except OSError as exc:
            raise _full(exc, spool_dir) from exc
        spool.seek(0)
        signature = await asyncio.to_thread(signer.sign, spool, key.alias)
        spool.seek(0)
        signed = await store.mark_signed(
            bundle.name,
            bundle.version,
            manifest=spool,
            manifest_size=size,
            manifest_sha256=sha256,
            signature=signature,
            signed_by=key.fingerprint,
            at=at,
        )
    finally:
        # after a flush that failed, closing flushes again and fails again; the file (unlinked
        # already) is closed all the same, and the first error is the one to answer
        with contextlib.suppress(OSError):
            spool.close()
    return signed


def _full(exc: OSError, spool_dir: Path) -> OSError | StorageFull:
    if exc.errno in DISK_FULL_ERRNOS:
        return StorageFull(f"no room in {spool_dir} to write the manifest: {exc.strerror}")
    return exc
