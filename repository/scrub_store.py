"""What the scrub reads and keeps in the node's database: the blobs to check, and its progress.

The blobs a node checks are the ones it serves or must keep: those an index entry names
(``CatalogBlobs``), and on the Distribution service those a bundle version names too. They
are read a page at a time in sha256 order, so a pass has a cursor to resume from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .db import Database
from .sql import Sql


class BlobSource(Protocol):
    """The blobs a node's scrub checks, with the size its database records for each."""

    async def blobs_after(self, after: str, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(sha256, size)``, in sha256 order, each sha256 after ``after``."""

    async def references(self, sha256: str) -> bool:
        """Whether anything still names the blob (a pass may meet one deleted meanwhile)."""


class CatalogBlobs:
    """Every blob an index entry names."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def blobs_after(self, after: str, limit: int) -> list[tuple[str, int]]:
        return await self._database.run(
            lambda: [
                (r[0], r[1])
                for r in self._db.execute(
                    "SELECT DISTINCT sha256, size FROM artifacts WHERE sha256 > :after ORDER BY sha256 LIMIT :limit",
                    {"after": after, "limit": limit},
                )
            ]
        )

    async def references(self, sha256: str) -> bool:
        return await self._database.run(
            lambda: (
                self._db.execute(
                    "SELECT 1 FROM artifacts WHERE sha256 = :sha256 LIMIT 1", {"sha256": sha256}
                ).fetchone()
                is not None
            )
        )


@dataclass(frozen=True)
class ScrubProgress:
    cursor: str  # the last sha256 the pass under way has checked
    started: int | None  # epoch ms; None: no pass under way
    blobs: int
    bytes: int
    quarantined: int
    last_started: int | None
    last_finished: int | None
    last_blobs: int
    last_bytes: int
    last_quarantined: int


_COLUMNS = (
    "cursor, started, blobs, bytes, quarantined, last_started, last_finished, last_blobs, last_bytes, last_quarantined"
)


class ScrubStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def progress(self) -> ScrubProgress:
        return await self._database.run(self._progress)

    def _progress(self) -> ScrubProgress:
        return ScrubProgress(*self._db.execute(f"SELECT {_COLUMNS} FROM scrub_state WHERE id = 1").one())

    async def begin(self, now: int) -> ScrubProgress:
        """A new pass, or the one under way (left by a stop or a crash), to resume at its cursor."""
        return await self._database.run(self._begin, now)

    def _begin(self, now: int) -> ScrubProgress:
        with self._db.atomic():
            self._db.execute(
                "UPDATE scrub_state SET started = :now, cursor = '', blobs = 0, bytes = 0, quarantined = 0"
                " WHERE id = 1 AND started IS NULL",
                {"now": now},
            )
            return self._progress()

    async def advance(self, cursor: str, blobs: int, size: int, quarantined: int) -> None:
        """Record a page of the pass checked, up to ``cursor``."""
        await self._database.run(
            self._db.execute,
            "UPDATE scrub_state SET cursor = :cursor, blobs = blobs + :blobs, bytes = bytes + :size,"
            " quarantined = quarantined + :quarantined WHERE id = 1",
            {"cursor": cursor, "blobs": blobs, "size": size, "quarantined": quarantined},
        )

    async def finish(self, now: int) -> ScrubProgress:
        return await self._database.run(self._finish, now)

    def _finish(self, now: int) -> ScrubProgress:
        with self._db.atomic():
            self._db.execute(
                "UPDATE scrub_state SET last_started = started, last_finished = :now, last_blobs = blobs,"
                " last_bytes = bytes, last_quarantined = quarantined, started = NULL, cursor = '',"
                " blobs = 0, bytes = 0, quarantined = 0 WHERE id = 1",
                {"now": now},
            )
            return self._progress()
