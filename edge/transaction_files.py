"""The files of an OPEN transaction's manifest, recorded a page at a time: their queries.

A manifest of 100,000 files is never held decoded: its start records each page it reads
(``wire.manifest_reader``) here, its commit publishes from here a page at a time, and the
rows go once the transaction is committed or ended. A start that fails, or that a crash
cut short, leaves rows without an OPEN transaction; the next start of that manifest, or
the next start-up, removes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

from repository import bulk
from repository.db import Database
from repository.sql import Sql
from wire.manifest import ManifestArtifact, ManifestError


class TransactionFile(NamedTuple):
    repo: str
    path: str
    sha256: str
    size: int
    sha1: str
    md5: str
    properties: dict[str, list[str]]


def file_of(artifact: ManifestArtifact) -> TransactionFile:
    repo, _, path = artifact.target.partition("/")
    a = artifact
    return TransactionFile(repo, path, a.sha256, a.size, a.sha1, a.md5, a.properties)


class TransactionFiles:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def add(self, tx_id: str, files: Sequence[TransactionFile]) -> None:
        """Record a page of a manifest's files (a start's, before its transaction is open)."""
        rows = [{"id": tx_id, **f._asdict(), "properties": json.dumps(f.properties, sort_keys=True)} for f in files]
        await self._database.run_page(self._add, rows)

    def _add(self, rows: list[dict[str, object]]) -> None:
        with self._db.atomic():  # one transaction for the page, not one per row
            self._db.executemany(
                "INSERT INTO transaction_files (transaction_id, repo, path, sha256, size, sha1, md5, properties)"
                " VALUES (:id, :repo, :path, :sha256, :size, :sha1, :md5, :properties)",
                rows,
            )

    async def check_sizes(self, tx_id: str) -> None:
        """400 if one sha256 is listed with two sizes (pages are checked one at a time as they come)."""
        sha256 = await self._database.run(
            lambda: self._db.scalar(
                "SELECT sha256 FROM transaction_files WHERE transaction_id = :id GROUP BY sha256"
                " HAVING min(size) != max(size) LIMIT 1",
                {"id": tx_id},
            )
        )
        if sha256 is not None:
            raise ManifestError(f"Invalid manifest: sha256 {sha256} is listed with two sizes")

    async def repos(self, tx_id: str) -> list[str]:
        return await self._database.run(
            lambda: [
                r[0]
                for r in self._db.execute(
                    "SELECT DISTINCT repo FROM transaction_files WHERE transaction_id = :id ORDER BY repo",
                    {"id": tx_id},
                )
            ]
        )

    async def pages(self, tx_id: str) -> AsyncIterator[list[TransactionFile]]:
        """Every file of the transaction, ``bulk.PAGE`` at a time."""
        after = ("", "")
        while page := await self._database.run(self._page, tx_id, after):
            yield page
            after = (page[-1].repo, page[-1].path)

    def _page(self, tx_id: str, after: tuple[str, str]) -> list[TransactionFile]:
        rows = self._db.execute(
            "SELECT repo, path, sha256, size, sha1, md5, properties FROM transaction_files"
            " WHERE transaction_id = :id AND (repo, path) > (:repo, :path) ORDER BY repo, path LIMIT :limit",
            {"id": tx_id, "repo": after[0], "path": after[1], "limit": bulk.PAGE},
        )
        return [
            TransactionFile(repo, path, sha256, size, sha1, md5, json.loads(properties))
            for repo, path, sha256, size, sha1, md5, properties in rows
        ]

    async def drop(self, tx_id: str) -> None:
        """Forget a transaction's files, a page at a time."""
        while await self._database.run_page(self._drop_page, tx_id):
            pass

    def _drop_page(self, tx_id: str) -> int:
        return int(
            self._db.execute(
                "DELETE FROM transaction_files WHERE (transaction_id, repo, path) IN"
                " (SELECT transaction_id, repo, path FROM transaction_files WHERE transaction_id = :id LIMIT :limit)",
                {"id": tx_id, "limit": bulk.PAGE},
            ).rowcount
        )

    async def sweep(self) -> None:
        """At start-up: forget the files of every transaction that is not OPEN."""
        await self._database.run(
            lambda: self._db.execute(
                "DELETE FROM transaction_files"
                " WHERE transaction_id NOT IN (SELECT id FROM transactions WHERE state = 'OPEN')"
            )
        )
