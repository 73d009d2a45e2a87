"""Blobs taken out of service because their stored bytes no longer match their sha256.

A quarantined blob stays referenced by its index entries, so every path that names it is
still listed, but none of them is served (409, naming the reason) until the right bytes
come back: a distribution that sends the blob again, or a deploy of the same bytes. Its
damaged bytes are moved aside by the blob store (``StorageBackend.quarantine``), never
deleted, for an operator to look at.

Downloads ask "is this blob quarantined?" on every request, so the answer comes from a set
held in memory, read again from the database at most every ``REFRESH_SECONDS``: another
process's quarantine is seen within that time, and this process's own at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .db import Database
from .errors import Conflict
from .sql import Sql

REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class QuarantinedBlob:
    sha256: str
    size: int
    found: int  # epoch ms
    reason: str
    location: str | None  # where the damaged bytes went; None when the store had lost them

    def as_json(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "found": self.found,
            "reason": self.reason,
            "location": self.location,
        }


class BlobQuarantined(Conflict):
    """A download of a path whose blob is quarantined: never its damaged bytes."""

    def __init__(self, repo_path: str, reason: str) -> None:
        super().__init__(
            f"The stored bytes of {repo_path} failed verification ({reason}) and are quarantined; it is"
            " served again once its bytes are restored (the next distribution of its bundle, or a deploy"
            " of the same bytes)"
        )


class Quarantine:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._known: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()
        database.copies.register(self._forget)  # another process quarantined or restored a blob

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def among(self, sha256s: Iterable[str]) -> set[str]:
        """Those of ``sha256s`` that are quarantined."""
        known = await self._current()
        return {s for s in sha256s if s in known}

    def surely_clear(self, sha256: str) -> bool:
        """Whether the set held in memory is fresh and ``sha256`` is not in it: the download's
        answer without a coroutine; otherwise ``among`` (which may read the set again) decides."""
        return sha256 not in self._known and time.monotonic() - self._read_at <= REFRESH_SECONDS

    async def _current(self) -> frozenset[str]:
        if time.monotonic() - self._read_at > REFRESH_SECONDS:
            async with self._reading:
                if time.monotonic() - self._read_at > REFRESH_SECONDS:
                    await self._reload()
        return self._known

    def _forget(self) -> None:
        self._read_at = float("-inf")

    async def _reload(self) -> None:
        """On the reader thread: a download that finds the set stale never waits for the writer."""
        rows = await self._database.read(lambda: self._db.execute("SELECT sha256 FROM quarantine").fetchall())
        self._known, self._read_at = frozenset(r[0] for r in rows), time.monotonic()

    async def get(self, sha256: str) -> QuarantinedBlob | None:
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT sha256, size, found, reason, location FROM quarantine WHERE sha256 = :sha256",
                {"sha256": sha256},
            ).fetchone()
        )
        return QuarantinedBlob(*row) if row else None

    async def blobs(self) -> list[QuarantinedBlob]:
        rows = await self._database.run(
            lambda: self._db.execute(
                "SELECT sha256, size, found, reason, location FROM quarantine ORDER BY found, sha256"
            ).fetchall()
        )
        return [QuarantinedBlob(*r) for r in rows]

    async def count(self) -> int:
        count = await self._database.run(lambda: self._db.execute("SELECT count(*) FROM quarantine").scalar_one())
        return int(count)

    async def add(self, blob: QuarantinedBlob) -> None:
        await self._database.run(
            self._db.execute,
            "INSERT INTO quarantine (sha256, size, found, reason, location)"
            " VALUES (:sha256, :size, :found, :reason, :location) ON CONFLICT (sha256) DO UPDATE SET"
            " size = excluded.size, found = excluded.found, reason = excluded.reason, location = excluded.location",
            blob.as_json(),
        )
        self._database.changed()
        await self._reload()

    async def release(self, sha256s: Iterable[str]) -> list[str]:
        """Return those of ``sha256s`` that were quarantined to service (their right bytes are
        stored again); answers which. Costs a database write only when one of them was."""
        freed = sorted(await self.among(sha256s))
        if freed:
            await self._database.run(self._db.execute, "DELETE FROM quarantine WHERE sha256 IN :shas", {"shas": freed})
            self._database.changed()
            await self._reload()
        return freed

    async def paths(self, sha256: str) -> list[tuple[str, str]]:
        """Every ``(repo, path)`` whose index entry names the blob."""
        rows = await self._database.run(
            lambda: self._db.execute(
                "SELECT repo, path FROM artifacts WHERE sha256 = :sha256 ORDER BY repo, path", {"sha256": sha256}
            ).fetchall()
        )
        return [(r[0], r[1]) for r in rows]
