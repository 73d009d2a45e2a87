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

from repository import bulk
from repository.db import Database
from repository.errors import Conflict
from repository.sql import Sql

from .store import Transaction, absent_key, bundle_owner

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
    def _db(self) -> Sql:
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
        if absent_key(name, version):
            return None
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT name, version, transaction_id, action, bulk_key FROM bundle_changes"
                " WHERE name = :name AND version = :version",
                {"name": name, "version": version},
            ).fetchone()
        )
        return BundleChange(*row) if row else None

    def begin_rows(self, change: BundleChange) -> None:
        """Record a change; a second change of the same bundle version meanwhile is a 409."""
        bundle = {"name": change.name, "version": change.version}
        if self._db.scalar("SELECT 1 FROM bundle_changes WHERE name = :name AND version = :version", bundle):
            raise Conflict(f"Release bundle {change.name}/{change.version} is being changed on this edge; retry")
        self._db.execute(
            "INSERT INTO bundle_changes (name, version, transaction_id, action, bulk_key)"
            " VALUES (:name, :version, :transaction_id, :action, :bulk_key)",
            {**bundle, "transaction_id": change.transaction_id, "action": change.action, "bulk_key": change.bulk_key},
        )

    def begin_removal_rows(self, change: BundleChange) -> None:
        """Record a removal, and take the bundle off this edge's list at once."""
        self.begin_rows(change)
        self._db.execute(
            "DELETE FROM received_bundles WHERE name = :name AND version = :version",
            {"name": change.name, "version": change.version},
        )

    def end_rows(self, change: BundleChange) -> None:
        self._db.execute(
            "DELETE FROM bundle_changes WHERE name = :name AND version = :version",
            {"name": change.name, "version": change.version},
        )

    def end_removal_rows(self, change: BundleChange) -> None:
        """The removal is done: the change, and the transaction (so pushing the bundle again starts afresh)."""
        self.end_rows(change)
        self._db.execute("DELETE FROM transactions WHERE id = :id", {"id": change.transaction_id})

    async def drop_transaction_blobs(self, tx_id: str) -> int:
        """Delete a page of a transaction's blob list (before the transaction itself goes)."""
        return await self._database.run_page(
            lambda: (
                self._db.execute(
                    "DELETE FROM transaction_blobs WHERE (transaction_id, sha256) IN (SELECT transaction_id, sha256"
                    " FROM transaction_blobs WHERE transaction_id = :id LIMIT :limit)",
                    {"id": tx_id, "limit": bulk.PAGE},
                ).rowcount
            )
        )

    # -- claims ---------------------------------------------------------------------

    def claim_rows(self, tx: Transaction, paths: Sequence[Path]) -> None:
        self._db.executemany(
            "INSERT INTO bundle_files (name, version, repo, path) VALUES (:name, :version, :repo, :path)"
            " ON CONFLICT (name, version, repo, path) DO NOTHING",
            [{"name": tx.name, "version": tx.version, "repo": repo, "path": path} for repo, path in paths],
        )

    def drop_claim_rows(self, change: BundleChange, paths: Sequence[Path]) -> None:
        self._db.executemany(
            "DELETE FROM bundle_files WHERE name = :name AND version = :version AND repo = :repo AND path = :path",
            [{"name": change.name, "version": change.version, "repo": repo, "path": path} for repo, path in paths],
        )

    async def first_claims(self, name: str, version: str, limit: int = bulk.PAGE) -> list[Path]:
        """The first ``limit`` paths a bundle claims (a removal drops each page it handled)."""
        return await self._database.run(
            lambda: [
                (r[0], r[1])
                for r in self._db.execute(
                    "SELECT repo, path FROM bundle_files WHERE name = :name AND version = :version"
                    " ORDER BY repo, path LIMIT :limit",
                    {"name": name, "version": version, "limit": limit},
                )
            ]
        )

    async def removal_progress(self, change: BundleChange) -> tuple[int, int]:
        """``(left, total)``: how many paths a bundle being removed still claims, of how many files
        its transaction lists."""
        return await self._database.run(self._removal_progress, change)

    def _removal_progress(self, change: BundleChange) -> tuple[int, int]:
        left = self._db.scalar(
            "SELECT count(*) FROM bundle_files WHERE name = :name AND version = :version",
            {"name": change.name, "version": change.version},
        )
        files = self._db.scalar("SELECT files FROM transactions WHERE id = :id", {"id": change.transaction_id})
        return int(left), int(files or 0)

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
        """Two queries a page, whatever number of its paths are shared (one per path was a round
        trip per path to a PostgreSQL server)."""
        bundle = {"name": name, "version": version, "repo": after[0], "path": after[1]}
        paths = self._db.execute(
            "SELECT repo, path FROM bundle_files WHERE name = :name AND version = :version"
            " AND (repo, path) > (:repo, :path) ORDER BY repo, path LIMIT :limit",
            {**bundle, "limit": bulk.PAGE},
        ).fetchall()
        if not paths:
            return None, {}
        others = self._db.execute(
            "SELECT o.repo, o.path, o.name, o.version FROM bundle_files b JOIN bundle_files o"
            " ON o.repo = b.repo AND o.path = b.path AND NOT (o.name = :name AND o.version = :version)"
            " WHERE b.name = :name AND b.version = :version AND (b.repo, b.path) > (:repo, :path)"
            " AND (b.repo, b.path) <= (:last_repo, :last_path) ORDER BY o.repo, o.path, o.name, o.version",
            {**bundle, "last_repo": paths[-1][0], "last_path": paths[-1][1]},
        )
        shared: dict[Path, str] = {}
        for repo, path, other_name, other_version in others:
            shared.setdefault((repo, path), bundle_owner(other_name, other_version))
        last = (paths[-1][0], paths[-1][1]) if len(paths) == bulk.PAGE else None
        return last, shared
