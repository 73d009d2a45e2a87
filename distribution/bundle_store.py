"""Every query of bundles and their artifacts, run on the database thread.

A bundle's artifact rows are staged a page at a time and become its content in
one transaction with its row, so a bundle is stored whole or not at all; signing
stores the manifest bytes and signature in one update that only succeeds while the
bundle is still OPEN. A bundle's artifacts and its manifest are read and written a
page or a chunk at a time, never whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from repository.db import Database
from repository.sql import Sql
from wire.manifest import ManifestSbom

from .webhook_events import BUNDLE_CREATED, publish

PAGE_SIZE = 10
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
