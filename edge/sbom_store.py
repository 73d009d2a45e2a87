"""The queries of the SBOMs that signed manifests name (``transaction_sboms``, see ``edge.schema``).

An SBOM travels as one more blob of its transaction: ``record_rows`` adds it to the
transaction's blob list when the transaction opens, so the "missing" answer asks for it, an
upload of it is checked as any blob's is, a commit waits for it, and the transaction pins it
while the bundle is on the edge. What is left is which blob a bundle serves as its SBOM.
"""

from __future__ import annotations

from repository.db import Database
from repository.sql import Sql
from wire.manifest import ManifestError, ManifestSbom

from .store import absent_key


class SbomStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    def record_rows(self, tx_id: str, sbom: ManifestSbom) -> None:
        """Inside the transaction's opening write: the SBOM, and its blob in the blob list (unless a
        file of the bundle has the same bytes: then its row is there already, and must have the
        same size, else the manifest is refused and the write rolled back)."""
        keys = {"id": tx_id, "sha256": sbom.sha256, "size": sbom.size}
        self._db.execute(
            "INSERT INTO transaction_sboms (transaction_id, sha256, size) VALUES (:id, :sha256, :size)", keys
        )
        listed = self._db.scalar(
            "SELECT size FROM transaction_blobs WHERE transaction_id = :id AND sha256 = :sha256", keys
        )
        if listed is not None and int(listed) != sbom.size:
            raise ManifestError(f"Invalid manifest: sha256 {sbom.sha256} is listed with two sizes")
        if listed is None:
            self._db.execute(
                "INSERT INTO transaction_blobs (transaction_id, sha256, size) VALUES (:id, :sha256, :size)", keys
            )

    async def of_transaction(self, tx_id: str) -> ManifestSbom | None:
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT sha256, size FROM transaction_sboms WHERE transaction_id = :id", {"id": tx_id}
            ).fetchone()
        )
        return ManifestSbom(row[0], int(row[1])) if row else None

    async def of_bundle(self, name: str, version: str) -> ManifestSbom | None:
        """The SBOM of a bundle committed on this edge (not one being removed); None if it has none."""
        if absent_key(name, version):
            return None
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT s.sha256, s.size FROM received_bundles b JOIN transaction_sboms s"
                " ON s.transaction_id = b.manifest_sha256 WHERE b.name = :name AND b.version = :version",
                {"name": name, "version": version},
            ).fetchone()
        )
        return ManifestSbom(row[0], int(row[1])) if row else None
