"""The pull-mode jobs an edge has under way, kept in its database (``pull_jobs``) across restarts."""

from __future__ import annotations

from dataclasses import dataclass

from repository.db import Database
from repository.sql import Sql
from wire.pull import WorkItem


@dataclass(frozen=True)
class LocalJob:
    item: WorkItem
    transaction_id: str | None


class PullJobs:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def all(self) -> list[LocalJob]:
        rows = await self._database.run(
            lambda: self._db.execute(
                "SELECT distribution_id, type, name, version, transaction_id FROM pull_jobs ORDER BY distribution_id"
            ).fetchall()
        )
        return [LocalJob(WorkItem(*row[:4]), row[4]) for row in rows]

    async def begin(self, item: WorkItem) -> LocalJob:
        """The job as recorded: new, or as an earlier run (before a restart) left it."""

        def begin() -> LocalJob:
            with self._db.atomic():
                tx = self._db.scalar(
                    "SELECT transaction_id FROM pull_jobs WHERE distribution_id = :id", {"id": item.distribution_id}
                )
                if tx is None:
                    self._db.execute(
                        "INSERT INTO pull_jobs (distribution_id, type, name, version) VALUES (:id, :type, :name,"
                        " :version) ON CONFLICT (distribution_id) DO NOTHING",
                        {"id": item.distribution_id, "type": item.type, "name": item.name, "version": item.version},
                    )
            return LocalJob(item, tx)

        return await self._database.run(begin)

    async def opened(self, distribution_id: int, transaction_id: str) -> None:
        await self._database.run(
            self._db.execute,
            "UPDATE pull_jobs SET transaction_id = :tx WHERE distribution_id = :id",
            {"tx": transaction_id, "id": distribution_id},
        )

    async def done(self, distribution_id: int) -> None:
        await self._database.run(
            self._db.execute, "DELETE FROM pull_jobs WHERE distribution_id = :id", {"id": distribution_id}
        )
