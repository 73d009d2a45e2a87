"""The queries of relays (docs/tiers.md): what a parent edge was asked to relay to which child,
and how far each relay got. Every query of the ``relays`` table is here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.sql import Sql
from wire.protocol import RelayState

_COLUMNS = (
    "transaction_id, child, url, token, state, error, total_files, total_bytes,"
    " distributed_files, distributed_bytes, sent_bytes, created, updated"
)


_KEY = "transaction_id = :tx AND child = :child"


@dataclass(frozen=True)
class Relay:
    transaction_id: str
    child: str
    url: str
    token: str
    state: str
    error: str
    total_files: int
    total_bytes: int
    distributed_files: int
    distributed_bytes: int
    sent_bytes: int
    created: int
    updated: int

    @property
    def name(self) -> str:
        """The child's name, as the transaction client names its target."""
        return self.child

    @property
    def key(self) -> tuple[str, str]:
        return self.transaction_id, self.child

    def public_json(self) -> dict[str, Any]:
        """Everything but the child's token."""
        fields = asdict(self)
        del fields["token"]
        return fields


class RelayStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def ask(self, tx_id: str, child: str, url: str, token: str, totals: tuple[int, int]) -> Relay:
        """Record a relay asked for. Asked again while it runs or after it committed, with the same
        URL and token: the same relay (a retry). A relay that ended otherwise, or whose child moved,
        runs again from the start (the transaction to the child is idempotent)."""
        return await self._database.run(self._ask, tx_id, child, url, token, totals)

    def _ask(self, tx_id: str, child: str, url: str, token: str, totals: tuple[int, int]) -> Relay:
        with self._db.atomic():
            found = self._get(tx_id, child)
            same = found is not None and (found.url, found.token) == (url, token)
            if found is not None and same and found.state in (RelayState.RUNNING, RelayState.COMMITTED):
                return found
            key = {"tx": tx_id, "child": child}
            self._db.execute(f"DELETE FROM relays WHERE {_KEY}", key)
            self._db.execute(
                "INSERT INTO relays (transaction_id, child, url, token, state, total_files, total_bytes, created,"
                " updated) VALUES (:tx, :child, :url, :token, :state, :files, :bytes, :at, :at)",
                key
                | {"url": url, "token": token, "state": RelayState.RUNNING.value}
                | {"files": totals[0], "bytes": totals[1], "at": now_ms()},
            )
            relay = self._get(tx_id, child)
            assert relay is not None
            return relay

    async def get(self, tx_id: str, child: str) -> Relay | None:
        return await self._database.read(self._get, tx_id, child)

    def _get(self, tx_id: str, child: str) -> Relay | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM relays WHERE transaction_id = :tx AND child = :child",
            {"tx": tx_id, "child": child},
        ).fetchone()
        return Relay(*row) if row else None

    async def running(self) -> list[Relay]:
        rows = await self._database.read(
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM relays WHERE state = :state ORDER BY created", {"state": RelayState.RUNNING}
            ).fetchall()
        )
        return [Relay(*r) for r in rows]

    async def progress(self, key: tuple[str, str], error: str, **fields: int) -> bool:
        """Counters (and the last retry's reason) of a running relay; False when it no longer runs."""
        return await self._set(key, RelayState.RUNNING, {"error": error, **fields})

    async def end(self, key: tuple[str, str], state: RelayState, error: str = "", **fields: int) -> bool:
        """End a running relay; False when it was not running (aborted meanwhile)."""
        return await self._set(key, RelayState.RUNNING, {"state": state.value, "error": error, **fields})

    async def abort(self, tx_id: str, child: str) -> bool:
        return await self._set((tx_id, child), RelayState.RUNNING, {"state": RelayState.ABORTED.value})

    async def _set(self, key: tuple[str, str], only: RelayState, fields: dict[str, Any]) -> bool:
        sets = ", ".join(f"{k} = :set_{k}" for k in fields)
        params = {f"set_{k}": v for k, v in fields.items()} | {"tx": key[0], "child": key[1], "only": only.value}
        cursor = await self._database.run(
            self._db.execute,
            f"UPDATE relays SET {sets}, updated = :at WHERE {_KEY} AND state = :only",
            params | {"at": now_ms()},
        )
        return bool(cursor.rowcount)

    async def manifest_size(self, tx_id: str) -> int:
        return int(
            await self._database.read(
                lambda: self._db.scalar(
                    "SELECT coalesce(sum(length(data)), 0) FROM transaction_manifest_chunks WHERE transaction_id = :id",
                    {"id": tx_id},
                )
            )
        )
