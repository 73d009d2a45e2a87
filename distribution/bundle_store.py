"""Every query of bundles and their artifacts, run on the database thread.

A bundle and its artifact rows are written in one transaction, so a bundle is
stored whole or not at all; signing stores the manifest bytes and signature in
one update that only succeeds while the bundle is still OPEN.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from repository.db import Database
from repository.errors import NotFound
from repository.scrub_store import CatalogBlobs

MANIFEST_CHUNK = 1024 * 1024

PAGE_SIZE = 10


@dataclass(frozen=True)
class BundleArtifact:
    target: str
    source: str
    sha256: str
    sha1: str
    md5: str
    size: int
    properties: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    state: str
    description: str
    release_notes: dict[str, str]
    request_sha256: str
    created: int
    created_by: str
    modified: int
    artifacts_count: int
    artifacts_size: int
    manifest_sha256: str | None = None
    signed_by: str | None = None
    signed_at: int | None = None


_BUNDLE_COLUMNS = (
    "name, version, state, description, release_notes, request_sha256, created, created_by, modified,"
    " artifacts_count, artifacts_size, manifest_sha256, signed_by, signed_at"
)


@dataclass(frozen=True)
class SignedManifest:
    name: str
    version: str
    size: int
    signature: str


def _bundle(row: tuple[Any, ...]) -> Bundle:
    values = list(row)
    values[4] = json.loads(values[4])
    return Bundle(*values)


class BundleStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> sqlite_utils.Database:
        return self._database.db

    async def get(self, name: str, version: str) -> Bundle | None:
        """On the reader thread: a status read asks for the bundle first, and must not wait for
        a bulk load of another bundle's rows."""
        return await self._database.read(self._get, name, version)

    def _get(self, name: str, version: str) -> Bundle | None:
        row = self._db.execute(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE name = ? AND version = ?", [name, version]
        ).fetchone()
        return _bundle(row) if row else None

    async def save(self, bundle: Bundle, artifacts: list[BundleArtifact], *, replace: bool) -> None:
        """Insert a new bundle, or (``replace``) swap an OPEN bundle's content, atomically."""
        await self._database.run(self._save, bundle, artifacts, replace)

    def _save(self, bundle: Bundle, artifacts: list[BundleArtifact], replace: bool) -> None:
        row = bundle.__dict__ | {"release_notes": json.dumps(bundle.release_notes, sort_keys=True)}
        with self._db.atomic():
            if replace:
                self._db.execute(
                    "DELETE FROM bundles WHERE name = ? AND version = ? AND state = 'OPEN'",
                    [bundle.name, bundle.version],
                )
            columns = ", ".join(row)
            self._db.execute(
                f"INSERT INTO bundles ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
            self._db.conn.executemany(
                "INSERT INTO bundle_artifacts (name, version, target, source, sha256, sha1, md5, size, properties)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        bundle.name,
                        bundle.version,
                        a.target,
                        a.source,
                        a.sha256,
                        a.sha1,
                        a.md5,
                        a.size,
                        json.dumps(a.properties, sort_keys=True),
                    )
                    for a in artifacts
                ),
            )

    async def artifacts(self, name: str, version: str) -> list[BundleArtifact]:
        return await self._database.run(self._artifacts, name, version)

    def _artifacts(self, name: str, version: str) -> list[BundleArtifact]:
        rows = self._db.execute(
            "SELECT target, source, sha256, sha1, md5, size, properties FROM bundle_artifacts"
            " WHERE name = ? AND version = ? ORDER BY target",
            [name, version],
        )
        return [BundleArtifact(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def pinned(self, sha256s: list[str]) -> set[str]:
        """Those of ``sha256s`` that a stored bundle version lists, in any state: a signed one
        must still be distributable, and an OPEN one names the exact bytes it will be signed
        with (its rows were resolved from the catalog), so either holds its blobs until it is
        deleted, whatever happens to the source paths."""
        return await self._database.run(self._pinned, sha256s)

    def _pinned(self, sha256s: list[str]) -> set[str]:
        pinned: set[str] = set()
        for start in range(0, len(sha256s), 500):
            page = sha256s[start : start + 500]
            rows = self._db.execute(
                f"SELECT DISTINCT sha256 FROM bundle_artifacts WHERE sha256 IN ({', '.join('?' * len(page))})", page
            )
            pinned.update(r[0] for r in rows)
        return pinned

    async def mark_signed(
        self, name: str, version: str, *, manifest: bytes, manifest_sha256: str, signature: str, signed_by: str, at: int
    ) -> bool:
        """Record a signature; False if the bundle is no longer OPEN (someone signed it first)."""
        return await self._database.run(
            self._mark_signed, name, version, manifest, manifest_sha256, signature, signed_by, at
        )

    def _mark_signed(
        self, name: str, version: str, manifest: bytes, manifest_sha256: str, signature: str, signed_by: str, at: int
    ) -> bool:
        with self._db.atomic():
            cursor = self._db.execute(
                "UPDATE bundles SET state = 'SIGNED', manifest_sha256 = ?, signed_by = ?, signed_at = ?, modified = ?"
                " WHERE name = ? AND version = ? AND state = 'OPEN'",
                [manifest_sha256, signed_by, at, at, name, version],
            )
            if not cursor.rowcount:
                return False
            self._db.execute(
                "INSERT INTO bundle_manifests (name, version, manifest, signature) VALUES (?, ?, ?, ?)",
                [name, version, manifest, signature],
            )
        return True

    async def signed_parts(self, name: str, version: str) -> tuple[bytes, str] | None:
        """The canonical manifest bytes and armored signature of a signed bundle."""
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT manifest, signature FROM bundle_manifests WHERE name = ? AND version = ?", [name, version]
            ).fetchone()
        )
        return (bytes(row[0]), row[1]) if row else None

    async def signed_manifest(self, name: str, version: str) -> SignedManifest | None:
        """The size and signature of a signed bundle's manifest, whose bytes ``manifest_chunks`` reads."""
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT length(manifest), signature FROM bundle_manifests WHERE name = ? AND version = ?",
                [name, version],
            ).fetchone()
        )
        return SignedManifest(name, version, int(row[0]), row[1]) if row else None

    async def manifest_chunks(self, manifest: SignedManifest) -> AsyncIterator[bytes]:
        """The manifest's bytes, ``MANIFEST_CHUNK`` at a time (a 30 MB manifest is never held whole);
        each chunk read on its own, so nothing waits behind the whole of it."""
        for offset in range(0, manifest.size, MANIFEST_CHUNK):
            yield await self._database.read(self._manifest_chunk, manifest, offset)

    def _manifest_chunk(self, manifest: SignedManifest, offset: int) -> bytes:
        row = self._db.execute(
            "SELECT rowid FROM bundle_manifests WHERE name = ? AND version = ?", [manifest.name, manifest.version]
        ).fetchone()
        if row is None:
            raise NotFound(f"Release bundle {manifest.name}/{manifest.version} no longer exists")
        with self._db.conn.blobopen("bundle_manifests", "manifest", row[0], readonly=True) as blob:
            blob.seek(offset)
            return blob.read(MANIFEST_CHUNK)

    async def delete(self, name: str, version: str) -> bool:
        cursor = await self._database.run(
            self._db.execute, "DELETE FROM bundles WHERE name = ? AND version = ?", [name, version]
        )
        return bool(cursor.rowcount)

    async def page(self, name: str | None, start: int) -> tuple[list[Bundle], int]:
        """One page of bundles (all, or the versions of one name), newest first, and the total."""
        return await self._database.run(self._page, name, start)

    def _page(self, name: str | None, start: int) -> tuple[list[Bundle], int]:
        where, args = ("WHERE name = ?", [name]) if name is not None else ("", [])
        total = self._db.execute(f"SELECT count(*) FROM bundles {where}", args).fetchone()[0]
        rows = self._db.execute(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles {where} ORDER BY created DESC, name, version LIMIT ? OFFSET ?",
            [*args, PAGE_SIZE, start],
        )
        return [_bundle(r) for r in rows], total


def total_size(artifacts: Iterable[BundleArtifact]) -> int:
    return sum(a.size for a in artifacts)


class ServiceBlobs(CatalogBlobs):
    """The blobs the service's scrub checks: those of source paths, and those of bundle versions,
    which must stay distributable whatever happens to their sources."""

    async def blobs_after(self, after: str, limit: int) -> list[tuple[str, int]]:
        return await self._database.run(
            lambda: [
                (r[0], r[1])
                for r in self._db.execute(
                    "SELECT sha256, size FROM artifacts WHERE sha256 > ?"
                    " UNION SELECT sha256, size FROM bundle_artifacts WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                    [after, after, limit],
                )
            ]
        )

    async def references(self, sha256: str) -> bool:
        return await super().references(sha256) or await self._database.run(
            lambda: (
                self._db.execute("SELECT 1 FROM bundle_artifacts WHERE sha256 = ? LIMIT 1", [sha256]).fetchone()
                is not None
            )
        )
