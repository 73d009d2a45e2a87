"""Every query of the edge's own tables (see ``edge.schema``), run on the database thread.

Functions named ``*_rows`` are not coroutines: they run *inside* a catalog write's
``db.atomic()`` block (``Catalog.publish(extra=...)``), so the edge's record of a
bundle commits or rolls back together with the bundle's index entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from repository.db import Database
from repository.errors import Conflict
from wire.protocol import TransactionState as State

_TX_COLUMNS = "id, name, version, state, signer, created, expires, committed, files, bytes"


@dataclass(frozen=True)
class Transaction:
    id: str
    name: str
    version: str
    state: State
    signer: str
    created: int
    expires: int
    committed: int | None
    files: int
    bytes: int

    @property
    def owner(self) -> str:
        return bundle_owner(self.name, self.version)


@dataclass(frozen=True)
class ReceivedBundle:
    name: str
    version: str
    manifest_sha256: str
    committed: int
    files: int
    bytes: int


@dataclass(frozen=True)
class KeyAlias:
    alias: str
    fingerprint: str
    created: int


def bundle_owner(name: str, version: str) -> str:
    """The ``owner`` of a bundle's index entries."""
    return f"bundle:{name}/{version}"


def _transaction(row: tuple[Any, ...]) -> Transaction:
    values = list(row)
    values[3] = State(values[3])
    return Transaction(*values)


class EdgeStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> sqlite_utils.Database:
        return self._database.db

    # -- transactions ---------------------------------------------------------

    async def get(self, tx_id: str) -> Transaction | None:
        return await self._database.run(self._get, tx_id)

    def _get(self, tx_id: str) -> Transaction | None:
        row = self._db.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?", [tx_id]).fetchone()
        return _transaction(row) if row else None

    async def manifest(self, tx_id: str) -> tuple[bytes, str]:
        """The signed manifest bytes and their signature."""
        row = await self._database.run(
            lambda: self._db.execute("SELECT manifest, signature FROM transactions WHERE id = ?", [tx_id]).fetchone()
        )
        return bytes(row[0]), str(row[1])

    async def open(
        self, tx: Transaction, manifest: bytes, signature: str, blobs: dict[str, int]
    ) -> tuple[Transaction, bool]:
        """Insert ``tx``, or reopen it if it was aborted or expired; an OPEN or COMMITTED one is
        answered as it is. The flag says whether it is (re)opened by this call."""
        return await self._database.run(self._open, tx, manifest, signature, blobs)

    def _open(
        self, tx: Transaction, manifest: bytes, signature: str, blobs: dict[str, int]
    ) -> tuple[Transaction, bool]:
        with self._db.atomic():
            existing = self._get(tx.id)
            if existing is None:
                self._db.execute(
                    "INSERT INTO transactions (id, name, version, state, manifest, signature, signer, created,"
                    " expires, committed, files, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    [tx.id, tx.name, tx.version, State.OPEN.value, manifest, signature, tx.signer, tx.created,
                     tx.expires, tx.files, tx.bytes],
                )  # fmt: skip
                self._db.conn.executemany(
                    "INSERT INTO transaction_blobs (transaction_id, sha256, size) VALUES (?, ?, ?)",
                    [(tx.id, sha256, size) for sha256, size in blobs.items()],
                )
            elif existing.state in (State.ABORTED, State.EXPIRED):
                self._db.execute(
                    "UPDATE transactions SET state = ?, signature = ?, signer = ?, expires = ? WHERE id = ?",
                    [State.OPEN.value, signature, tx.signer, tx.expires, tx.id],
                )
                # what it stored before it ended may have been collected since
                self._db.execute("UPDATE transaction_blobs SET stored = 0 WHERE transaction_id = ?", [tx.id])
            else:
                return existing, False
            found = self._get(tx.id)
        assert found is not None
        return found, True

    async def blobs(self, tx_id: str) -> dict[str, int]:
        """sha256 -> size of every distinct blob of the transaction's manifest."""
        return await self._database.run(
            lambda: dict(
                self._db.execute(
                    "SELECT sha256, size FROM transaction_blobs WHERE transaction_id = ?", [tx_id]
                ).fetchall()
            )
        )

    async def blob_sizes(self, tx_id: str, sha256s: list[str]) -> dict[str, int]:
        """sha256 -> size of those of ``sha256s`` that the transaction's manifest lists."""
        marks = ",".join("?" * len(sha256s))
        return await self._database.run(
            lambda: dict(
                self._db.execute(
                    f"SELECT sha256, size FROM transaction_blobs WHERE transaction_id = ? AND sha256 IN ({marks})",
                    [tx_id, *sha256s],
                ).fetchall()
            )
        )

    async def blob_size(self, tx_id: str, sha256: str) -> int | None:
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT size FROM transaction_blobs WHERE transaction_id = ? AND sha256 = ?", [tx_id, sha256]
            ).fetchone()
        )
        return None if row is None else int(row[0])

    async def end(self, tx_id: str, state: State) -> bool:
        """OPEN -> ``state`` (ABORTED or EXPIRED); False if the transaction was not OPEN."""
        cursor = await self._database.run(
            self._db.execute,
            "UPDATE transactions SET state = ? WHERE id = ? AND state = ?",
            [state.value, tx_id, "OPEN"],
        )
        return bool(cursor.rowcount)

    async def expired(self, now: int) -> list[str]:
        return await self._database.run(
            lambda: [
                r[0]
                for r in self._db.execute("SELECT id FROM transactions WHERE state = 'OPEN' AND expires <= ?", [now])
            ]
        )

    async def count_by_state(self) -> dict[State, int]:
        """How many transactions are in each state, every state named (for the metrics)."""
        rows = await self._database.run(
            lambda: self._db.execute("SELECT state, count(*) FROM transactions GROUP BY state").fetchall()
        )
        return {state: 0 for state in State} | {State(s): n for s, n in rows}

    async def open_ids(self) -> set[str]:
        return await self._database.run(
            lambda: {r[0] for r in self._db.execute("SELECT id FROM transactions WHERE state = 'OPEN'")}
        )

    async def pinned(self, sha256s: list[str]) -> set[str]:
        """Those of ``sha256s`` that an OPEN or COMMITTED transaction's manifest lists: a blob a
        transaction in flight found held or has received, or one of a committed bundle, is never
        collected, whatever happens to other paths with the same bytes."""
        return set(await self._database.run(self._live_blobs, sha256s, ""))

    async def mark_stored(self, tx_id: str, sha256s: list[str]) -> None:
        """Record that these blobs of the transaction are in the blob store (see ``stored``)."""
        await self._database.run(self._mark_stored, tx_id, sha256s)

    def _mark_stored(self, tx_id: str, sha256s: list[str]) -> None:
        for start in range(0, len(sha256s), 500):
            page = sha256s[start : start + 500]
            self._db.execute(
                "UPDATE transaction_blobs SET stored = 1 WHERE transaction_id = ?"
                f" AND sha256 IN ({', '.join('?' * len(page))})",
                [tx_id, *page],
            )

    async def stored(self, sha256s: list[str]) -> dict[str, int]:
        """sha256 -> size of those of ``sha256s`` an OPEN or COMMITTED transaction has recorded as
        stored: such a blob is pinned by that transaction, so it is still in the blob store."""
        return await self._database.run(self._live_blobs, sha256s, " AND b.stored = 1")

    def _live_blobs(self, sha256s: list[str], condition: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(sha256s), 500):
            page = sha256s[start : start + 500]
            found.update(
                self._db.execute(
                    "SELECT DISTINCT b.sha256, b.size FROM transaction_blobs b JOIN transactions t"
                    " ON t.id = b.transaction_id WHERE t.state IN ('OPEN', 'COMMITTED')"
                    f" AND b.sha256 IN ({', '.join('?' * len(page))}){condition}",
                    page,
                ).fetchall()
            )
        return found

    def commit_rows(self, tx: Transaction, paths: list[tuple[str, str]], now: int) -> None:
        """Mark ``tx`` committed and record its bundle; raises (rolling the publish back) if the
        transaction is no longer OPEN or its name and version were committed with another manifest."""
        current = self._get(tx.id)
        if current is None or current.state is not State.OPEN:
            raise Conflict(f"Transaction {tx.id} is {current.state if current else 'gone'}; it cannot be committed")
        other = self._bundle(tx.name, tx.version)
        if other is not None:
            raise Conflict(f"Release bundle {tx.name}/{tx.version} is already on this edge with another manifest")
        self._db.execute("UPDATE transactions SET state = 'COMMITTED', committed = ? WHERE id = ?", [now, tx.id])
        self._db.execute(
            "INSERT INTO received_bundles (name, version, manifest_sha256, committed, files, bytes)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [tx.name, tx.version, tx.id, now, tx.files, tx.bytes],
        )
        self._db.conn.executemany(
            "INSERT OR IGNORE INTO bundle_files (name, version, repo, path) VALUES (?, ?, ?, ?)",
            [(tx.name, tx.version, repo, path) for repo, path in paths],
        )

    # -- bundles ----------------------------------------------------------------

    async def bundle(self, name: str, version: str) -> ReceivedBundle | None:
        return await self._database.run(self._bundle, name, version)

    def _bundle(self, name: str, version: str) -> ReceivedBundle | None:
        row = self._db.execute(
            "SELECT name, version, manifest_sha256, committed, files, bytes FROM received_bundles"
            " WHERE name = ? AND version = ?",
            [name, version],
        ).fetchone()
        return ReceivedBundle(*row) if row else None

    async def bundles(self) -> list[ReceivedBundle]:
        return await self._database.run(
            lambda: [
                ReceivedBundle(*r)
                for r in self._db.execute(
                    "SELECT name, version, manifest_sha256, committed, files, bytes FROM received_bundles"
                    " ORDER BY name, version"
                )
            ]
        )

    async def published_rows(self, name: str, version: str) -> list[tuple[str, str, int]]:
        """``(repo/path, sha256, size)`` of each path the bundle claims that has an index entry."""
        return await self._database.run(
            lambda: [
                (f"{repo}/{path}", sha256, size)
                for repo, path, sha256, size in self._db.execute(
                    "SELECT b.repo, b.path, a.sha256, a.size FROM bundle_files b JOIN artifacts a"
                    " ON a.repo = b.repo AND a.path = b.path WHERE b.name = ? AND b.version = ?",
                    [name, version],
                )
            ]
        )

    async def bundle_claims(self, name: str, version: str) -> tuple[list[tuple[str, str]], dict[tuple[str, str], str]]:
        """The paths a bundle claims, and for those another bundle claims too, that bundle's owner."""
        return await self._database.run(self._bundle_claims, name, version)

    def _bundle_claims(self, name: str, version: str) -> tuple[list[tuple[str, str]], dict[tuple[str, str], str]]:
        paths = [
            (r[0], r[1])
            for r in self._db.execute(
                "SELECT repo, path FROM bundle_files WHERE name = ? AND version = ?", [name, version]
            )
        ]
        others: dict[tuple[str, str], str] = {}
        for repo, path, other_name, other_version in self._db.execute(
            "SELECT o.repo, o.path, o.name, o.version FROM bundle_files b JOIN bundle_files o"
            " ON o.repo = b.repo AND o.path = b.path WHERE b.name = ? AND b.version = ?"
            " AND NOT (o.name = ? AND o.version = ?)",
            [name, version, name, version],
        ):
            others[repo, path] = bundle_owner(other_name, other_version)
        return paths, others

    def forget_bundle_rows(self, bundle: ReceivedBundle) -> None:
        """Drop a bundle's record and its transaction (so pushing it again starts afresh)."""
        self._db.execute("DELETE FROM received_bundles WHERE name = ? AND version = ?", [bundle.name, bundle.version])
        self._db.execute("DELETE FROM transactions WHERE id = ?", [bundle.manifest_sha256])

    # -- trusted key aliases ------------------------------------------------------

    async def key_aliases(self) -> list[KeyAlias]:
        return await self._database.run(
            lambda: [
                KeyAlias(*r)
                for r in self._db.execute("SELECT alias, fingerprint, created FROM trusted_keys ORDER BY alias")
            ]
        )

    async def add_key_alias(self, key: KeyAlias) -> None:
        await self._database.run(
            self._db.execute,
            "INSERT INTO trusted_keys (alias, fingerprint, created) VALUES (?, ?, ?)",
            [key.alias, key.fingerprint, key.created],
        )

    async def remove_key_alias(self, alias: str) -> None:
        await self._database.run(self._db.execute, "DELETE FROM trusted_keys WHERE alias = ?", [alias])
