"""The paths each bundle claims on this edge, and the bundle changes in progress: their queries.

Two bundles may publish the same bytes at one path; the entry has one owner, and
``bundle_files`` records every bundle's claim, so removing one bundle hands the path to
the other instead of deleting it. A bundle's claims are written and removed a page at a
time, together with its index entries (``edge.bundle_index``); ``bundle_changes`` says
which bundle is being committed or removed, so a restart can finish the work.

As in ``edge.store``, ``*_rows`` functions run inside a catalog write's transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import sqlite_utils

from repository import bulk
from repository.db import Database
from repository.errors import Conflict

from .store import Transaction, bundle_owner

COMMIT = "commit"
REMOVE = "remove"

Path = tuple[str, str]


@dataclass(frozen=True)
class BundleChange:
    name: str
    version: str
    transaction_id: str
    action: str  # COMMIT or REMOVE
    bulk_key: str  # the catalog's change

    @property
    def owner(self) -> str:
        return bundle_owner(self.name, self.version)


class BundleClaims:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> sqlite_utils.Database:
        return self._database.db

    # -- changes in progress ------------------------------------------------------

    async def changes(self) -> list[BundleChange]:
        return await self._database.run(
            lambda: [
                BundleChange(*r)
                for r in self._db.execute(
                    "SELECT name, version, transaction_id, action, bulk_key FROM bundle_changes ORDER BY name, version"
                )
            ]
        )

    async def change(self, name: str, version: str) -> BundleChange | None:
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT name, version, transaction_id, action, bulk_key FROM bundle_changes"
                " WHERE name = ? AND version = ?",
                [name, version],
            ).fetchone()
        )
        return BundleChange(*row) if row else None

    def begin_rows(self, change: BundleChange) -> None:
        """Record a change; a second change of the same bundle version meanwhile is a 409."""
        if self._db.execute(
            "SELECT 1 FROM bundle_changes WHERE name = ? AND version = ?", [change.name, change.version]
        ).fetchone():
            raise Conflict(f"Release bundle {change.name}/{change.version} is being changed on this edge; retry")
        self._db.execute(
            "INSERT INTO bundle_changes (name, version, transaction_id, action, bulk_key) VALUES (?, ?, ?, ?, ?)",
            [change.name, change.version, change.transaction_id, change.action, change.bulk_key],
        )

    def begin_removal_rows(self, change: BundleChange) -> None:
        """Record a removal, and take the bundle off this edge's list at once."""
        self.begin_rows(change)
        self._db.execute("DELETE FROM received_bundles WHERE name = ? AND version = ?", [change.name, change.version])

    def end_rows(self, change: BundleChange) -> None:
        self._db.execute("DELETE FROM bundle_changes WHERE name = ? AND version = ?", [change.name, change.version])

    def end_removal_rows(self, change: BundleChange) -> None:
        """The removal is done: the change, and the transaction (so pushing the bundle again starts afresh)."""
        self.end_rows(change)
        self._db.execute("DELETE FROM transactions WHERE id = ?", [change.transaction_id])

    async def drop_transaction_blobs(self, tx_id: str) -> int:
        """Delete a page of a transaction's blob list (before the transaction itself goes)."""
        return await self._database.run_page(
            lambda: (
                self._db.execute(
                    "DELETE FROM transaction_blobs WHERE (transaction_id, sha256) IN"
                    " (SELECT transaction_id, sha256 FROM transaction_blobs WHERE transaction_id = ? LIMIT ?)",
                    [tx_id, bulk.PAGE],
                ).rowcount
            )
        )

    # -- claims ---------------------------------------------------------------------

    def claim_rows(self, tx: Transaction, paths: Sequence[Path]) -> None:
        self._db.conn.executemany(
            "INSERT OR IGNORE INTO bundle_files (name, version, repo, path) VALUES (?, ?, ?, ?)",
            [(tx.name, tx.version, repo, path) for repo, path in paths],
        )

    def drop_claim_rows(self, change: BundleChange, paths: Sequence[Path]) -> None:
        self._db.conn.executemany(
            "DELETE FROM bundle_files WHERE name = ? AND version = ? AND repo = ? AND path = ?",
            [(change.name, change.version, repo, path) for repo, path in paths],
        )

    async def first_claims(self, name: str, version: str, limit: int = bulk.PAGE) -> list[Path]:
        """The first ``limit`` paths a bundle claims (a removal drops each page it handled)."""
        return await self._database.run(
            lambda: [
                (r[0], r[1])
                for r in self._db.execute(
                    "SELECT repo, path FROM bundle_files WHERE name = ? AND version = ? ORDER BY repo, path LIMIT ?",
                    [name, version, limit],
                )
            ]
        )

    async def removal_progress(self, change: BundleChange) -> tuple[int, int]:
        """``(left, total)``: how many paths a bundle being removed still claims, of how many files
        its transaction lists."""
        return await self._database.run(self._removal_progress, change)

    def _removal_progress(self, change: BundleChange) -> tuple[int, int]:
        ((left,),) = self._db.execute(
            "SELECT count(*) FROM bundle_files WHERE name = ? AND version = ?", [change.name, change.version]
        ).fetchall()
        files = self._db.execute("SELECT files FROM transactions WHERE id = ?", [change.transaction_id]).fetchall()
        return int(left), int(files[0][0]) if files else 0

    async def shared_claims(self, name: str, version: str) -> AsyncIterator[dict[Path, str]]:
        """The paths a bundle claims that another bundle claims too, with that bundle's owner, a page
        of the bundle's paths at a time."""
        after = ("", "")
        while True:
            last, shared = await self._database.run(self._shared_page, name, version, after)
            if shared:
                yield shared
            if last is None:
                return
            after = last

    def _shared_page(self, name: str, version: str, after: Path) -> tuple[Path | None, dict[Path, str]]:
        paths = self._db.execute(
            "SELECT repo, path FROM bundle_files WHERE name = ? AND version = ? AND (repo, path) > (?, ?)"
            " ORDER BY repo, path LIMIT ?",
            [name, version, *after, bulk.PAGE],
        ).fetchall()
        shared: dict[Path, str] = {}
        for repo, path in paths:
            for other_name, other_version in self._db.execute(
                "SELECT name, version FROM bundle_files WHERE repo = ? AND path = ? AND NOT (name = ? AND version = ?)"
                " LIMIT 1",
                [repo, path, name, version],
            ):
                shared[repo, path] = bundle_owner(other_name, other_version)
        last = (paths[-1][0], paths[-1][1]) if len(paths) == bulk.PAGE else None
        return last, shared
