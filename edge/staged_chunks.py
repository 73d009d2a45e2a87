"""The record of chunks staged in a shared blob store (table ``staged_chunks``, edge/schema.py m008).

Every replica of an edge reads it, so any of them answers how many bytes of a blob have been
received and continues from there. A chunk is recorded only where the blob's recorded bytes
end (``add``): two processes that both appended to one blob at once could not both record, so
the blob never holds a chunk twice or a gap. Named parameters only: it runs on sqlite and
PostgreSQL alike.
"""

from __future__ import annotations

from repository.db import Database
from storage_backends import StagedChunk

_EXTENT = "SELECT COALESCE(SUM(size), 0) FROM staged_chunks WHERE transaction_id = :tx AND sha256 = :sha"


class StagedChunks:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def extent(self, tx_id: str, sha256: str) -> int:
        """Bytes of the blob recorded so far (0: none)."""
        return await self.database.read(self._extent, tx_id, sha256)

    def _extent(self, tx_id: str, sha256: str) -> int:
        return int(self.database.db.scalar(_EXTENT, {"tx": tx_id, "sha": sha256}))

    async def chunks(self, tx_id: str, sha256: str) -> list[StagedChunk]:
        """The blob's chunks, in order."""
        return await self.database.read(self._chunks, tx_id, sha256)

    def _chunks(self, tx_id: str, sha256: str) -> list[StagedChunk]:
        rows = self.database.db.execute(
            "SELECT name, etag, size FROM staged_chunks WHERE transaction_id = :tx AND sha256 = :sha"
            " ORDER BY first_byte",
            {"tx": tx_id, "sha": sha256},
        )
        return [StagedChunk(row.name, row.etag, row.size) for row in rows]

    async def add(self, tx_id: str, sha256: str, first_byte: int, chunk: StagedChunk) -> bool:
        """Record ``chunk`` at ``first_byte``; False, and nothing recorded, unless the blob's
        recorded bytes end exactly there (another process appended meanwhile)."""
        return await self.database.run(self._add, tx_id, sha256, first_byte, chunk)

    def _add(self, tx_id: str, sha256: str, first_byte: int, chunk: StagedChunk) -> bool:
        params = {"tx": tx_id, "sha": sha256, "at": first_byte, "size": chunk.size, "name": chunk.name}
        added = self.database.db.execute(
            "INSERT INTO staged_chunks (transaction_id, sha256, first_byte, size, name, etag)"
            f" SELECT :tx, :sha, :at, :size, :name, :etag WHERE ({_EXTENT}) = :at"
            " ON CONFLICT DO NOTHING",
            {**params, "etag": chunk.etag},
        )
        return added.rowcount == 1

    async def drop(self, tx_id: str, sha256: str) -> None:
        await self.database.run(self._drop, tx_id, sha256)

    def _drop(self, tx_id: str, sha256: str) -> None:
        self.database.db.execute(
            "DELETE FROM staged_chunks WHERE transaction_id = :tx AND sha256 = :sha", {"tx": tx_id, "sha": sha256}
        )

    async def free(self, tx_id: str) -> None:
        """Forget every chunk of a transaction."""
        await self.database.run(self._free, tx_id)

    def _free(self, tx_id: str) -> None:
        self.database.db.execute("DELETE FROM staged_chunks WHERE transaction_id = :tx", {"tx": tx_id})

    async def transactions(self) -> set[str]:
        """Every transaction with a chunk recorded."""
        return await self.database.read(self._transactions)

    def _transactions(self) -> set[str]:
        return {tx for (tx,) in self.database.db.execute("SELECT DISTINCT transaction_id FROM staged_chunks")}
