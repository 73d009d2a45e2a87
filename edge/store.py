"""Every query of the edge's transactions, bundles and trusted keys (see ``edge.schema``), in
SQL that runs on sqlite and PostgreSQL alike (``repository.sql``).

Functions named ``*_rows`` are not coroutines: they run *inside* a catalog write's
``db.atomic()`` block (``BulkIndex.finish(extra=...)``, say), so the edge's record of a
bundle commits or rolls back together with the bundle's index entries.

On PostgreSQL, replicas share these rows: a change that reads before it writes runs in one
atomic block, so two replicas making it at once end with one result (the loser's block runs
again and finds the winner's rows: ``repository.db``). A transaction's manifest is kept as
rows of ``MANIFEST_CHUNK`` bytes, written and read one row at a time, so neither engine's
driver ever holds a manifest of tens of MB whole.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repository import bulk
from repository.catalog import IN_PAGE
from repository.db import Database
from repository.errors import Conflict
from repository.sql import Sql
from storage_backends import open_in_thread
from wire.protocol import TransactionState as State

MANIFEST_CHUNK = 1024 * 1024
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


def absent_key(*texts: str) -> bool:
    """Whether a key made of ``texts`` (a bundle's name and version, from a URL) can be in no row:
    PostgreSQL's text holds no NUL (nothing ever stores one in sqlite), so such a lookup answers
    "not there" without asking, as sqlite does."""
    return any("\x00" in text for text in texts)


def _transaction(row: tuple[Any, ...]) -> Transaction:
    values = list(row)
    values[3] = State(values[3])
    return Transaction(*values)


class EdgeStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def database(self) -> Database:
        return self._database

    @property
    def _db(self) -> Sql:
        return self._database.db

    # -- transactions ---------------------------------------------------------

    async def get(self, tx_id: str) -> Transaction | None:
        """On the reader thread (every upload and status asks): never behind a page of a commit."""
        return await self._database.read(self._get, tx_id)

    def _get(self, tx_id: str) -> Transaction | None:
        row = self._db.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = :id", {"id": tx_id}).fetchone()
        return _transaction(row) if row else None

    async def signature(self, tx_id: str) -> str:
        return str(
            await self._database.read(
                lambda: self._db.scalar("SELECT signature FROM transactions WHERE id = :id", {"id": tx_id})
            )
        )

    async def manifest_to(self, tx_id: str, path: Path) -> None:
        """Copy the transaction's signed manifest bytes into the file ``path``, a chunk a query (a
        driver reads a result whole) on the walker: neither writes nor short reads wait behind it.
        The chunks need no common snapshot: a transaction's id is its manifest's sha256."""
        with await open_in_thread(open, path, "wb") as out:
            async for chunk in self.manifest_chunks(tx_id):
                await asyncio.to_thread(out.write, chunk)

    async def manifest_chunks(self, tx_id: str) -> AsyncIterator[bytes]:
        """The transaction's signed manifest bytes, a stored chunk (at most a MiB) at a time."""
        for seq in itertools.count():
            chunk = await self._database.walk(self._manifest_chunk, tx_id, seq)
            if chunk is None:
                return
            yield chunk

    def _manifest_chunk(self, tx_id: str, seq: int) -> bytes | None:
        return self._db.scalar(
            "SELECT data FROM transaction_manifest_chunks WHERE transaction_id = :id AND seq = :seq",
            {"id": tx_id, "seq": seq},
        )

    async def open(
        self, tx: Transaction, manifest: Path, signature: str, extra: Callable[[], None] | None = None
    ) -> tuple[Transaction, bool]:
        """Insert ``tx`` with its manifest (the bytes of the file ``manifest``) and the distinct blobs
        of the files its start recorded (``TransactionFiles``), replacing it if it was aborted or
        expired; an OPEN or COMMITTED one is answered as it is. The flag says whether it is
        (re)opened by this call. ``extra`` runs in the same write, once the rows are in (it
        records the manifest's SBOM: ``SbomStore.record_rows``)."""
        return await self._database.run(self._open, tx, manifest, signature, extra)

    def _open(
        self, tx: Transaction, manifest: Path, signature: str, extra: Callable[[], None] | None
    ) -> tuple[Transaction, bool]:
        with self._db.atomic():
            existing = self._get(tx.id)
            if existing is not None and existing.state in (State.OPEN, State.COMMITTED):
                return existing, False
            if existing is not None:  # aborted or expired: its blob list and manifest go with it
                self._db.execute("DELETE FROM transactions WHERE id = :id", {"id": tx.id})
            self._db.execute(
                "INSERT INTO transactions (id, name, version, state, signature, signer, created, expires,"
                " committed, files, bytes) VALUES (:id, :name, :version, :state, :signature, :signer, :created,"
                " :expires, NULL, :files, :bytes)",
                {"id": tx.id, "name": tx.name, "version": tx.version, "state": State.OPEN.value,
                 "signature": signature, "signer": tx.signer, "created": tx.created, "expires": tx.expires,
                 "files": tx.files, "bytes": tx.bytes},
            )  # fmt: skip
            self._db.execute(  # in sha256 order: appended to the b-trees rather than scattered (3x faster)
                "INSERT INTO transaction_blobs (transaction_id, sha256, size) SELECT DISTINCT transaction_id,"
                " sha256, size FROM transaction_files WHERE transaction_id = :id ORDER BY sha256",
                {"id": tx.id},
            )
            self._insert_manifest(tx.id, manifest)
            if extra is not None:
                extra()
            found = self._get(tx.id)
        assert found is not None
        return found, True

    def _insert_manifest(self, tx_id: str, manifest: Path) -> None:
        """The manifest's bytes as rows of ``MANIFEST_CHUNK`` bytes, read from the file one at a time."""
        with open(manifest, "rb") as src:
            for seq in itertools.count():
                chunk = src.read(MANIFEST_CHUNK)
                if not chunk:
                    return
                self._db.execute(
                    "INSERT INTO transaction_manifest_chunks (transaction_id, seq, data) VALUES (:id, :seq, :data)",
                    {"id": tx_id, "seq": seq, "data": chunk},
                )

    async def blob_pages(self, tx_id: str) -> AsyncIterator[list[str]]:
        """The sha256 of every distinct blob of the transaction's manifest, a page at a time."""
        after = ""
        while page := await self._database.run(self._blob_page, tx_id, after):
            yield page
            after = page[-1]

    def _blob_page(self, tx_id: str, after: str) -> list[str]:
        rows = self._db.execute(
            "SELECT sha256 FROM transaction_blobs WHERE transaction_id = :id AND sha256 > :after"
            " ORDER BY sha256 LIMIT :limit",
            {"id": tx_id, "after": after, "limit": bulk.PAGE},
        )
        return [r[0] for r in rows.fetchall()]

    async def blob_page(self, tx_id: str, after: str) -> dict[str, int]:
        """sha256 -> size of the transaction's distinct blobs after ``after``, a page in sha256 order."""
        return await self._database.read(
            lambda: dict(
                self._db.execute(
                    "SELECT sha256, size FROM transaction_blobs WHERE transaction_id = :id AND sha256 > :after"
                    " ORDER BY sha256 LIMIT :limit",
                    {"id": tx_id, "after": after, "limit": bulk.PAGE},
                ).fetchall()
            )
        )

    async def blob_sizes(self, tx_id: str, sha256s: list[str]) -> dict[str, int]:
        """sha256 -> size of those of ``sha256s`` that the transaction's manifest lists (a batch's)."""
        if not sha256s:  # an empty IN list is untyped, which PostgreSQL refuses to compare with text
            return {}
        return await self._database.read(
            lambda: dict(
                self._db.execute(
                    "SELECT sha256, size FROM transaction_blobs WHERE transaction_id = :id AND sha256 IN :shas",
                    {"id": tx_id, "shas": sha256s},
                ).fetchall()
            )
        )

    async def blob_size(self, tx_id: str, sha256: str) -> int | None:
        size = await self._database.read(
            lambda: self._db.scalar(
                "SELECT size FROM transaction_blobs WHERE transaction_id = :id AND sha256 = :sha256",
                {"id": tx_id, "sha256": sha256},
            )
        )
        return None if size is None else int(size)

    async def end(self, tx_id: str, state: State) -> bool:
        """OPEN -> ``state`` (ABORTED or EXPIRED); False if the transaction was not OPEN."""
        return await self._database.run(
            lambda: (
                self._db.execute(
                    "UPDATE transactions SET state = :state WHERE id = :id AND state = 'OPEN'",
                    {"state": state.value, "id": tx_id},
                ).rowcount
                == 1
            )
        )

    async def expired(self, now: int) -> list[str]:
        return await self._database.run(
            lambda: [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM transactions WHERE state = 'OPEN' AND expires <= :now", {"now": now}
                )
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
        collected, whatever happens to other paths with the same bytes. A bundle being removed
        pins nothing: its blobs go as the removal takes away the entries that name them. Read on
        the reader thread a page at a time, as ``Catalog.blob_sizes`` is."""
        pinned: set[str] = set()
        for start in range(0, len(sha256s), IN_PAGE):
            pinned |= set(await self._database.read(self._live_blobs, sha256s[start : start + IN_PAGE], False))
        return pinned

    async def mark_stored(self, tx_id: str, sha256s: list[str]) -> None:
        """Record that these blobs of the transaction are in the blob store (see ``stored``)."""
        await self._database.run(self._mark_stored, tx_id, sha256s)

    def _mark_stored(self, tx_id: str, sha256s: list[str]) -> None:
        for start in range(0, len(sha256s), IN_PAGE):
            self._db.execute(
                "UPDATE transaction_blobs SET stored = 1 WHERE transaction_id = :id AND sha256 IN :shas",
                {"id": tx_id, "shas": sha256s[start : start + IN_PAGE]},
            )

    async def stored(self, sha256s: list[str]) -> dict[str, int]:
        """sha256 -> size of those of ``sha256s`` an OPEN or COMMITTED transaction has recorded as
        stored: such a blob is pinned by that transaction, so it is still in the blob store."""
        found: dict[str, int] = {}
        for start in range(0, len(sha256s), IN_PAGE):
            found.update(await self._database.read(self._live_blobs, sha256s[start : start + IN_PAGE], True))
        return found

    def _live_blobs(self, page: list[str], stored_only: bool) -> dict[str, int]:
        """sha256 -> size of those of ``page`` an OPEN or COMMITTED transaction lists (and, with
        ``stored_only``, has recorded as stored), but for a bundle being removed."""
        rows = self._db.execute(
            "SELECT DISTINCT b.sha256, b.size FROM transaction_blobs b JOIN transactions t ON t.id = b.transaction_id"
            " WHERE t.state IN ('OPEN', 'COMMITTED') AND b.sha256 IN :shas AND b.stored >= :stored"
            " AND t.id NOT IN (SELECT transaction_id FROM bundle_changes WHERE action = 'remove')",
            {"shas": page, "stored": int(stored_only)},
        )
        return dict(rows.fetchall())

    def check_committable_rows(self, tx: Transaction) -> None:
        """Raise (409) if ``tx`` is no longer OPEN or its name and version are on this edge already."""
        current = self._get(tx.id)
        if current is None or current.state is not State.OPEN:
            raise Conflict(f"Transaction {tx.id} is {current.state if current else 'gone'}; it cannot be committed")
        if self._bundle(tx.name, tx.version) is not None:
            raise Conflict(f"Release bundle {tx.name}/{tx.version} is already on this edge with another manifest")

    def commit_rows(self, tx: Transaction, now: int) -> None:
        """Mark ``tx`` committed and record its bundle; raises (so its entries stay hidden and are
        removed again) if it can no longer be committed (``check_committable_rows``)."""
        self.check_committable_rows(tx)
        self._db.execute(
            "UPDATE transactions SET state = 'COMMITTED', committed = :now WHERE id = :id", {"now": now, "id": tx.id}
        )
        self._db.execute(
            "INSERT INTO received_bundles (name, version, manifest_sha256, committed, files, bytes)"
            " VALUES (:name, :version, :id, :now, :files, :bytes)",
            {"name": tx.name, "version": tx.version, "id": tx.id, "now": now, "files": tx.files, "bytes": tx.bytes},
        )

    # -- bundles ----------------------------------------------------------------

    async def bundle(self, name: str, version: str) -> ReceivedBundle | None:
        return None if absent_key(name, version) else await self._database.read(self._bundle, name, version)

    def _bundle(self, name: str, version: str) -> ReceivedBundle | None:
        row = self._db.execute(
            "SELECT name, version, manifest_sha256, committed, files, bytes FROM received_bundles"
            " WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).fetchone()
        return ReceivedBundle(*row) if row else None

    async def bundles(self) -> list[ReceivedBundle]:
        """On the reader thread: the list is short, and never waits for a page of a commit."""
        return await self._database.read(
            lambda: [
                ReceivedBundle(*r)
                for r in self._db.execute(
                    "SELECT name, version, manifest_sha256, committed, files, bytes FROM received_bundles"
                    " ORDER BY name, version"
                )
            ]
        )

    async def published_repos(self, name: str, version: str) -> list[str]:
        """The repos a bundle claims paths in, in the order of their paths' targets (``repo/path``)."""
        repos = await self._database.read(
            lambda: [
                r[0]
                for r in self._db.execute(
                    "SELECT DISTINCT repo FROM bundle_files WHERE name = :name AND version = :version",
                    {"name": name, "version": version},
                )
            ]
        )
        return sorted(repos, key=lambda repo: repo + "/")

    async def published_page(self, name: str, version: str, repo: str, after: str) -> list[tuple[str, str, int]]:
        """``(path, sha256, size)`` of a page of the paths after ``after`` the bundle claims in ``repo``
        that have an index entry, in path order."""
        rows = await self._database.read(
            lambda: self._db.execute(
                "SELECT b.path, a.sha256, a.size FROM bundle_files b JOIN artifacts a ON a.repo = b.repo"
                " AND a.path = b.path WHERE b.name = :name AND b.version = :version AND b.repo = :repo"
                " AND b.path > :after ORDER BY b.path LIMIT :limit",
                {"name": name, "version": version, "repo": repo, "after": after, "limit": bulk.PAGE},
            ).fetchall()
        )
        return [(path, sha256, size) for path, sha256, size in rows]

    # -- trusted key aliases ------------------------------------------------------

    async def key_aliases(self) -> list[KeyAlias]:
        return await self._database.run(
            lambda: [
                KeyAlias(*r)
                for r in self._db.execute("SELECT alias, fingerprint, created FROM trusted_keys ORDER BY alias")
            ]
        )

    async def add_key_alias(self, key: KeyAlias) -> tuple[KeyAlias, bool]:
        """Record ``key`` unless its alias names a key already; answers what the alias names now,
        and whether this call recorded it. Replicas sharing the database may add the same alias
        at once: one row wins, and both answer it."""
        return await self._database.run(self._add_key_alias, key)

    def _add_key_alias(self, key: KeyAlias) -> tuple[KeyAlias, bool]:
        with self._db.atomic():
            added = self._db.execute(
                "INSERT INTO trusted_keys (alias, fingerprint, created) VALUES (:alias, :fingerprint, :created)"
                " ON CONFLICT (alias) DO NOTHING",
                {"alias": key.alias, "fingerprint": key.fingerprint, "created": key.created},
            ).rowcount
            row = self._db.execute(
                "SELECT alias, fingerprint, created FROM trusted_keys WHERE alias = :alias", {"alias": key.alias}
            ).fetchone()
        assert row is not None  # inserted, or there already
        return KeyAlias(*row), added == 1

    async def remove_key_alias(self, alias: str) -> None:
        await self._database.run(
            lambda: self._db.execute("DELETE FROM trusted_keys WHERE alias = :alias", {"alias": alias})
        )
