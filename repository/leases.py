"""Leases in the node's database: background work that runs once per node, however many processes serve it.

A process that wants to do such work (a scrub pass, say) takes the lease by its name, renews
it while it works, and gives it back when done. A lease whose holder stopped renewing it
(a crash, a kill) expires and may be taken over. Every process has a holder id of its own.
"""

from __future__ import annotations

import uuid

import sqlite_utils

from .catalog import now_ms
from .db import Database


class Leases:
    def __init__(self, database: Database, holder: str | None = None) -> None:
        self._database = database
        self.holder = holder or uuid.uuid4().hex

    @property
    def _db(self) -> sqlite_utils.Database:
        return self._database.db

    async def take(self, name: str, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while another holder's is unexpired."""
        return await self._database.run(self._take, name, int(seconds * 1000))

    def _take(self, name: str, ms: int) -> bool:
        now = now_ms()
        self._db.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.holder = excluded.holder OR leases.expires <= ?",
            [name, self.holder, now + ms, now],
        )
        row = self._db.execute("SELECT holder FROM leases WHERE name = ?", [name]).fetchone()
        return row is not None and row[0] == self.holder

    async def give_back(self, name: str) -> None:
        await self._database.run(
            self._db.execute, "DELETE FROM leases WHERE name = ? AND holder = ?", [name, self.holder]
        )

    async def holder_of(self, name: str) -> str | None:
        """The holder of an unexpired lease ``name``, or None."""
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT holder FROM leases WHERE name = ? AND expires > ?", [name, now_ms()]
            ).fetchone()
        )
        return None if row is None else str(row[0])
