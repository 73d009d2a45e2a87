"""Every query of bundles and their artifacts, run on the database thread.

A bundle's artifact rows are staged a page at a time and become its content in
one transaction with its row, so a bundle is stored whole or not at all; signing
stores the manifest bytes and signature in one update that only succeeds while the
bundle is still OPEN. A bundle's artifacts and its manifest are read and written a
page or a chunk at a time, never whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from repository.catalog import now_ms
from repository.db import Database
from repository.errors import NotFound
from repository.scrub_store import CatalogBlobs
from repository.sql import Sql
from wire.manifest import ManifestSbom

from .pages import PAGE_SIZE
from .webhook_events import BUNDLE_CREATED, BUNDLE_DELETED, BUNDLE_SIGNED, publish

# Artifacts read at once when a whole bundle is walked (signing, pushing, answering it).
ARTIFACT_PAGE = 1000
# Bytes of a manifest in one of its rows (``bundle_manifest_chunks``): written and read at once.
MANIFEST_CHUNK = 1024 * 1024


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
class BundleBlob:
    """One blob of a bundle: its size, the files that list it and their bytes, and one of its targets."""

    sha256: str
    size: int
    files: int
    bytes: int
    target: str


@dataclass(frozen=True)
class TargetTaken:
    """A target staged from one source that another source would be mapped to as well."""

    target: str
    held_source: str
    source: str


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
    def _db(self) -> Sql:
        return self._database.db

    async def get(self, name: str, version: str) -> Bundle | None:
        """On the reader thread: a status read asks for the bundle first, and must not wait for
        a bulk load of another bundle's rows."""
        return await self._database.read(self._get, name, version)

    def _get(self, name: str, version: str) -> Bundle | None:
        row = self._db.execute(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).fetchone()
        return _bundle(row) if row else None

    async def commit_staged(
        self, bundle: Bundle, token: str, *, replace: bool, sbom: ManifestSbom | None = None
    ) -> None:
        """Make what is staged under ``token`` the content of a new bundle, or (``replace``) of an
        OPEN one, in one transaction: the rows move in one statement, never through Python. The
        bundle's SBOM (a blob stored already) is recorded, and so pinned, in the same transaction."""
        await self._database.run(self._commit_staged, bundle, token, replace, sbom)

    def _commit_staged(self, bundle: Bundle, token: str, replace: bool, sbom: ManifestSbom | None) -> None:
        row = bundle.__dict__ | {"release_notes": json.dumps(bundle.release_notes, sort_keys=True)}
        keys = {"name": bundle.name, "version": bundle.version, "token": token}
        with self._db.atomic():
            if replace:
                self._db.execute(
                    "DELETE FROM bundles WHERE name = :name AND version = :version AND state = 'OPEN'", keys
                )
            columns, values = ", ".join(row), ", ".join(f":{column}" for column in row)
            self._db.execute(f"INSERT INTO bundles ({columns}) VALUES ({values})", row)
            self._db.execute(
                "INSERT INTO bundle_artifacts (name, version, target, source, sha256, sha1, md5, size, properties)"
                " SELECT :name, :version, target, source, sha256, sha1, md5, size, properties FROM bundle_staging"
                " WHERE token = :token ORDER BY target",
                keys,
            )
            self._db.execute("DELETE FROM bundle_staging WHERE token = :token", keys)
            if not replace:
                created = {"name": bundle.name, "version": bundle.version, "created_by": bundle.created_by}
                publish(self._db, BUNDLE_CREATED, created)
            if sbom is not None:
                self._db.execute(
                    "INSERT INTO bundle_sboms (name, version, sha256, size) VALUES (:name, :version, :sha256, :size)",
                    keys | {"sha256": sbom.sha256, "size": sbom.size},
                )

    async def sbom(self, name: str, version: str) -> ManifestSbom | None:
        """The bundle's SBOM blob; None for a bundle made before SBOMs existed (or none at all)."""
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT sha256, size FROM bundle_sboms WHERE name = :name AND version = :version",
                {"name": name, "version": version},
            ).fetchone()
        )
        return ManifestSbom(row[0], int(row[1])) if row else None

    async def blobs(self, name: str, version: str) -> list[str]:
        """The distinct blobs a bundle lists, its SBOM's too (what to collect once it no longer
        does): strings only, a few MiB for 100,000 files."""
        return await self._database.run(
            lambda: [
                r[0]
                for r in self._db.execute(
                    "SELECT sha256 FROM bundle_artifacts WHERE name = :name AND version = :version"
                    " UNION SELECT sha256 FROM bundle_sboms WHERE name = :name AND version = :version"
                    " ORDER BY sha256",
                    {"name": name, "version": version},
                )
            ]
        )

    async def artifact_pages(self, name: str, version: str) -> AsyncIterator[list[BundleArtifact]]:
        """A bundle's artifacts in target order, ``ARTIFACT_PAGE`` at a time: memory stays flat in
        the bundle's size. Each page is a short read on the reader thread."""
        async for page in self._pages(
            "bundle_artifacts", "name = :name AND version = :version", {"name": name, "version": version}
        ):
            yield page

    async def staged_pages(self, token: str) -> AsyncIterator[list[BundleArtifact]]:
        """What ``stage`` put under ``token``, in target order, a page at a time."""
        async for page in self._pages("bundle_staging", "token = :token", {"token": token}):
            yield page

    async def _pages(self, table: str, where: str, params: dict[str, Any]) -> AsyncIterator[list[BundleArtifact]]:
        after = ""
        while True:
            page = await self._database.walk(self._artifact_page, table, where, params, after)
            if page:
                yield page
            if len(page) < ARTIFACT_PAGE:
                return
            after = page[-1].target

    def _artifact_page(self, table: str, where: str, params: dict[str, Any], after: str) -> list[BundleArtifact]:
        rows = self._db.execute(
            f"SELECT target, source, sha256, sha1, md5, size, properties FROM {table}"
            f" WHERE {where} AND target > :after ORDER BY target LIMIT :limit",
            params | {"after": after, "limit": ARTIFACT_PAGE},
        )
        return [BundleArtifact(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def bundle_blobs(self, name: str, version: str, sha256s: list[str]) -> dict[str, BundleBlob]:
        """Those of ``sha256s`` that the bundle lists, each with what it lists of them, and its SBOM
        (listed by no file: it counts for no file's progress); asked a page of blobs at a time (a
        push's missing blobs, which include the SBOM when the edge lacks it), a short read each."""
        return await self._database.walk(self._bundle_blobs, name, version, sha256s)

    def _bundle_blobs(self, name: str, version: str, sha256s: list[str]) -> dict[str, BundleBlob]:
        found: dict[str, BundleBlob] = {}
        for start in range(0, len(sha256s), 500):
            rows = self._db.execute(  # sum of BIGINTs is NUMERIC on PostgreSQL: cast back to an integer
                "SELECT sha256, max(size), count(*), CAST(sum(size) AS BIGINT), min(target) FROM bundle_artifacts"
                " WHERE name = :name AND version = :version AND sha256 IN :shas GROUP BY sha256",
                {"name": name, "version": version, "shas": sha256s[start : start + 500]},
            )
            found.update((r[0], BundleBlob(*r)) for r in rows)
        sbom = self._db.execute(
            "SELECT sha256, size FROM bundle_sboms WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).fetchone()
        if sbom is not None and sbom[0] in sha256s and sbom[0] not in found:
            found[sbom[0]] = BundleBlob(sbom[0], int(sbom[1]), 0, 0, f"{name}/{version} SBOM")
        return found

    async def staged_blobs(self, token: str) -> AsyncIterator[list[str]]:
        """The distinct blobs staged under ``token``, in sha256 order, a page at a time."""
        after = ""
        while True:
            page = await self._database.walk(
                lambda after=after: [
                    r[0]
                    for r in self._db.execute(
                        "SELECT DISTINCT sha256 FROM bundle_staging WHERE token = :token AND sha256 > :after"
                        " ORDER BY sha256 LIMIT :limit",
                        {"token": token, "after": after, "limit": ARTIFACT_PAGE},
                    )
                ]
            )
            if page:
                yield page
            if len(page) < ARTIFACT_PAGE:
                return
            after = page[-1]

    async def stage(self, token: str, page: list[BundleArtifact]) -> tuple[list[BundleArtifact], TargetTaken | None]:
        """Add a page of selected artifacts under ``token``; answers those that were new (a target
        already staged from the same source is skipped), or, for a target staged from another
        source, which one, and then stages nothing of the page."""
        return await self._database.run_page(self._stage, token, page)

    def _stage(self, token: str, page: list[BundleArtifact]) -> tuple[list[BundleArtifact], TargetTaken | None]:
        held: dict[str, str] = {}
        targets = sorted({a.target for a in page})
        for start in range(0, len(targets), 500):
            held.update(
                self._db.execute(
                    "SELECT target, source FROM bundle_staging WHERE token = :token AND target IN :targets",
                    {"token": token, "targets": targets[start : start + 500]},
                ).fetchall()
            )
        new: list[BundleArtifact] = []
        for a in page:
            source = held.get(a.target)
            if source is None:
                held[a.target] = a.source
                new.append(a)
            elif source != a.source:
                return [], TargetTaken(a.target, source, a.source)
        at = now_ms()
        with self._db.atomic():
            self._db.executemany(
                "INSERT INTO bundle_staging (token, target, source, sha256, sha1, md5, size, properties, staged_at)"
                " VALUES (:token, :target, :source, :sha256, :sha1, :md5, :size, :properties, :staged_at)",
                [
                    a.__dict__
                    | {"token": token, "properties": json.dumps(a.properties, sort_keys=True), "staged_at": at}
                    for a in new
                ],
            )
        return new, None

    async def unstage(self, token: str) -> None:
        await self._database.run(self._db.execute, "DELETE FROM bundle_staging WHERE token = :token", {"token": token})

    async def clear_staging(self, before: int) -> None:
        """Drop what creates cut off by a crash staged before ``before`` (ms)."""
        await self._database.run(
            self._db.execute, "DELETE FROM bundle_staging WHERE staged_at < :before", {"before": before}
        )

    async def pinned(self, sha256s: list[str]) -> set[str]:
        """Those of ``sha256s`` that a stored bundle version lists (its SBOM too), in any state: a
        signed one must still be distributable, and an OPEN one names the exact bytes it will be
        signed with (its rows were resolved from the catalog), so either holds its blobs until it
        is deleted, whatever happens to the source paths."""
        return await self._database.run(self._pinned, sha256s)

    def _pinned(self, sha256s: list[str]) -> set[str]:
        pinned: set[str] = set()
        for start in range(0, len(sha256s), 500):
            rows = self._db.execute(
                "SELECT sha256 FROM bundle_artifacts WHERE sha256 IN :shas"
                " UNION SELECT sha256 FROM bundle_sboms WHERE sha256 IN :shas",
                {"shas": sha256s[start : start + 500]},
            )
            pinned.update(r[0] for r in rows)
        return pinned

    async def mark_signed(
        self,
        name: str,
        version: str,
        *,
        manifest: BinaryIO,
        manifest_size: int,
        manifest_sha256: str,
        signature: str,
        signed_by: str,
        at: int,
    ) -> bool:
        """Record a signature and the manifest read from ``manifest`` (``manifest_size`` bytes from
        its current position); False if the bundle is no longer OPEN (someone signed it first).
        The manifest is stored as rows of ``MANIFEST_CHUNK`` bytes, a chunk read and written at a
        time, within the one transaction that marks the bundle signed: stored whole, or not at all."""
        signed = SignedManifest(name, version, manifest_size, signature)
        return await self._database.run(
            self._mark_signed, signed, manifest, manifest.tell(), manifest_sha256, signed_by, at
        )

    def _mark_signed(
        self, signed: SignedManifest, manifest: BinaryIO, start: int, manifest_sha256: str, signed_by: str, at: int
    ) -> bool:
        keys = {"name": signed.name, "version": signed.version}
        # a transaction that lost a race with another replica's runs again whole: from the first byte
        manifest.seek(start)
        with self._db.atomic():
            cursor = self._db.execute(
                "UPDATE bundles SET state = 'SIGNED', manifest_sha256 = :sha256, signed_by = :signed_by,"
                " signed_at = :at, modified = :at WHERE name = :name AND version = :version AND state = 'OPEN'",
                keys | {"sha256": manifest_sha256, "signed_by": signed_by, "at": at},
            )
            if not cursor.rowcount:
                return False
            self._db.execute(
                "INSERT INTO bundle_manifests (name, version, signature, size)"
                " VALUES (:name, :version, :signature, :size)",
                keys | {"signature": signed.signature, "size": signed.size},
            )
            left, seq = signed.size, 0
            while left:
                chunk = manifest.read(min(MANIFEST_CHUNK, left))
                if not chunk:
                    raise ValueError(f"manifest of {signed.name}/{signed.version} ended before its {signed.size} bytes")
                self._db.execute(
                    "INSERT INTO bundle_manifest_chunks (name, version, seq, data)"
                    " VALUES (:name, :version, :seq, :data)",
                    keys | {"seq": seq, "data": chunk},
                )
                left, seq = left - len(chunk), seq + 1
            publish(self._db, BUNDLE_SIGNED, keys | {"manifest_sha256": manifest_sha256, "signed_by": signed_by})
        return True

    async def signed_manifest(self, name: str, version: str) -> SignedManifest | None:
        """The size and signature of a signed bundle's manifest, whose bytes ``manifest_chunks`` reads."""
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT size, signature FROM bundle_manifests WHERE name = :name AND version = :version",
                {"name": name, "version": version},
            ).fetchone()
        )
        return SignedManifest(name, version, int(row[0]), row[1]) if row else None

    async def manifest_chunks(self, manifest: SignedManifest) -> AsyncIterator[bytes]:
        """The manifest's bytes, a stored chunk at a time (a 30 MB manifest is never held whole);
        each chunk read on its own, so nothing waits behind the whole of it."""
        read, seq = 0, 0
        while read < manifest.size:
            chunk = await self._database.walk(self._manifest_chunk, manifest, seq)
            yield chunk
            read, seq = read + len(chunk), seq + 1

    def _manifest_chunk(self, manifest: SignedManifest, seq: int) -> bytes:
        row = self._db.execute(
            "SELECT data FROM bundle_manifest_chunks WHERE name = :name AND version = :version AND seq = :seq",
            {"name": manifest.name, "version": manifest.version, "seq": seq},
        ).fetchone()
        if row is None:
            raise NotFound(f"Release bundle {manifest.name}/{manifest.version} no longer exists")
        return bytes(row[0])

    async def delete(self, name: str, version: str) -> bool:
        return await self._database.run(self._delete, name, version)

    def _delete(self, name: str, version: str) -> bool:
        keys = {"name": name, "version": version}
        with self._db.atomic():
            if not self._db.execute("DELETE FROM bundles WHERE name = :name AND version = :version", keys).rowcount:
                return False
            publish(self._db, BUNDLE_DELETED, keys)
        return True

    async def page(self, name: str | None, start: int, contains: str = "") -> tuple[list[Bundle], int]:
        """One page of bundles (all, or the versions of one name, or those whose name or version
        contains ``contains``), newest first, and the total."""
        return await self._database.run(self._page, name, start, contains)

    def _page(self, name: str | None, start: int, contains: str) -> tuple[list[Bundle], int]:
        conditions = ["name = :name"] if name is not None else []
        if contains:
            conditions.append("(name LIKE :like ESCAPE '!' OR version LIKE :like ESCAPE '!')")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        like = "%" + contains.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        params = {"name": name, "like": like}
        total = self._db.execute(f"SELECT count(*) FROM bundles {where}", params).scalar_one()
        rows = self._db.execute(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles {where}"
            " ORDER BY created DESC, name, version LIMIT :limit OFFSET :offset",
            params | {"limit": PAGE_SIZE, "offset": start},
        )
        return [_bundle(r) for r in rows], total


class ServiceBlobs(CatalogBlobs):
    """The blobs the service's scrub checks: those of source paths, and those of bundle versions,
    which must stay distributable whatever happens to their sources."""

    async def blobs_after(self, after: str, limit: int) -> list[tuple[str, int]]:
        return await self._database.run(
            lambda: [
                (r[0], r[1])
                for r in self._db.execute(
                    "SELECT sha256, size FROM artifacts WHERE sha256 > :after"
                    " UNION SELECT sha256, size FROM bundle_artifacts WHERE sha256 > :after"
                    " UNION SELECT sha256, size FROM bundle_sboms WHERE sha256 > :after"
                    " ORDER BY sha256 LIMIT :limit",
                    {"after": after, "limit": limit},
                )
            ]
        )

    async def references(self, sha256: str) -> bool:
        return await super().references(sha256) or await self._database.run(
            lambda: (
                self._db.execute(
                    "SELECT 1 FROM bundle_artifacts WHERE sha256 = :sha256"
                    " UNION ALL SELECT 1 FROM bundle_sboms WHERE sha256 = :sha256 LIMIT 1",
                    {"sha256": sha256},
                ).fetchone()
                is not None
            )
        )
