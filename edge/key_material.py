"""The public keys an edge trusts, kept in its database so that every replica can verify.

The alias table says which fingerprints count (``edge/trust.py``); a replica's GnuPG home is
its own (its data directory), so the key material itself is kept here too, as the home that
imported it last exported it. A replica asked to verify a signature first imports whichever
trusted keys its home lacks.
"""

from __future__ import annotations

from repository.db import Database
from repository.entries import now_ms


class KeyMaterial:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def put(self, fingerprint: str, armored: str) -> None:
        await self._database.run(self._put, fingerprint, armored)

    def _put(self, fingerprint: str, armored: str) -> None:
        self._database.db.execute(
            "INSERT INTO trusted_key_material (fingerprint, public_key, updated) VALUES (:fp, :key, :at)"
            " ON CONFLICT (fingerprint) DO UPDATE SET public_key = excluded.public_key, updated = excluded.updated",
            {"fp": fingerprint, "key": armored, "at": now_ms()},
        )

    async def get(self, fingerprints: list[str]) -> dict[str, str]:
        """fingerprint -> armored public key, for those of ``fingerprints`` the database holds."""
        if not fingerprints:
            return {}
        return await self._database.read(self._get, fingerprints)

    def _get(self, fingerprints: list[str]) -> dict[str, str]:
        rows = self._database.db.execute(
            "SELECT fingerprint, public_key FROM trusted_key_material WHERE fingerprint IN :fps",
            {"fps": fingerprints},
        )
        return {str(fp): str(key) for fp, key in rows}

    async def forget(self, fingerprint: str) -> None:
        await self._database.run(self._forget, fingerprint)

    def _forget(self, fingerprint: str) -> None:
        self._database.db.execute("DELETE FROM trusted_key_material WHERE fingerprint = :fp", {"fp": fingerprint})
