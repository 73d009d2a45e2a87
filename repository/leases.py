"""Leases in the node's database: background work that runs once per node, however many processes serve it.

A process that wants to do such work (a scrub pass, say) takes the lease by its name, renews
it while it works, and gives it back when done. A lease whose holder stopped renewing it
(a crash, a kill) expires and may be taken over. Every process has a holder id of its own.
"""

from __future__ import annotations

import uuid

from .catalog import now_ms
from .db import Database
from .sql import Sql


class Leases:
    def __init__(self, database: Database, holder: str | None = None) -> None:
        self._database = database
        self.holder = holder or uuid.uuid4().hex

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def take(self, name: str, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while another holder's is unexpired."""
        return await self._database.run(self._take, name, int(seconds * 1000))

    def _take(self, name: str, ms: int) -> bool:
        """One statement, which answers a row only when it took or renewed the lease: of processes
        taking it at once (on PostgreSQL, replicas on other machines), exactly one gets it."""
        now = now_ms()
        taken = self._db.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (:name, :holder, :expires) ON CONFLICT (name)"
            " DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.holder = excluded.holder OR leases.expires <= :now RETURNING holder",
            {"name": name, "holder": self.holder, "expires": now + ms, "now": now},
        ).fetchone()
        return taken is not None

    async def give_back(self, name: str) -> None:
        await self._database.run(
            self._db.execute,
            "DELETE FROM leases WHERE name = :name AND holder = :holder",
            {"name": name, "holder": self.holder},
        )

    async def holder_of(self, name: str) -> str | None:
        """The holder of an unexpired lease ``name``, or None."""
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT holder FROM leases WHERE name = :name AND expires > :now", {"name": name, "now": now_ms()}
            ).fetchone()
        )
        return None if row is None else str(row[0])
