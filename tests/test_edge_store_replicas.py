"""Replicas sharing one database make the same change to the edge's records at once (on
PostgreSQL; on sqlite, processes on one file): each change ends with one right result, the
losing replica's transaction running again and finding the winner's rows (``repository.db``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.claims import COMMIT, BundleChange, BundleClaims
from edge.store import EdgeStore, KeyAlias, ReceivedBundle
from edge.transaction_files import TransactionFiles
from repository.db import Database
from repository.sql import POSTGRESQL, Sql
from tests.test_edge_store import FILES, committed, in_one_transaction, opened, rows, started, transaction
from tests.test_edge_store import database as database  # noqa: F401  (the fixture)
from wire.protocol import TransactionState as State


@pytest.fixture
async def replica(db_target: str, tmp_path: Path, database: Database) -> AsyncIterator[Database]:
    """A second node process on the same database (another replica, on PostgreSQL)."""
    db = await opened(db_target, tmp_path / "replica")
    yield db
    await db.close()


def read_before_either_writes(monkeypatch: pytest.MonkeyPatch, database: Database, cls: type, name: str) -> None:
    """On PostgreSQL, hold the first call of ``cls.name`` on each of two threads until both have
    made it: both transactions have read that there is nothing yet before either writes. (On
    sqlite a write transaction holds the file's write lock from its start, so the other waits.)"""
    if database.dialect != POSTGRESQL:
        return
    barrier, waited = threading.Barrier(2, timeout=30), threading.local()
    inner = getattr(cls, name)

    def held(self: Any, *args: Any) -> Any:
        found = inner(self, *args)
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return found

    monkeypatch.setattr(cls, name, held)


async def test_two_replicas_opening_one_transaction_at_once_open_it_once(
    database: Database, replica: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await TransactionFiles(database).add("t1", FILES)
    read_before_either_writes(monkeypatch, database, EdgeStore, "_get")
    manifest = tmp_path / "manifest"
    manifest.write_bytes(b"the manifest")
    tx = transaction("t1", FILES)
    answers = await asyncio.gather(*(EdgeStore(db).open(tx, manifest, "sig") for db in (database, replica)))
    assert sorted(created for _, created in answers) == [False, True]
    assert [found for found, _ in answers] == [tx, tx]
    assert await rows(database, "SELECT count(*) FROM transaction_blobs") == [(3,)]
    await EdgeStore(replica).manifest_to("t1", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"the manifest"


async def test_two_replicas_committing_one_transaction_at_once_commit_it_once(
    database: Database, replica: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tx = transaction("t1", FILES)
    await started(database, tmp_path, tx, FILES)
    read_before_either_writes(monkeypatch, database, EdgeStore, "_bundle")
    answers = await asyncio.gather(*(committed(db, tx) for db in (database, replica)), return_exceptions=True)
    assert sorted(type(a).__name__ for a in answers) == ["Conflict", "NoneType"]
    assert await EdgeStore(replica).bundles() == [ReceivedBundle("app", "1.0", "t1", 5000, 4, 40)]


async def test_two_replicas_changing_one_bundle_at_once_record_one_change(
    database: Database, replica: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_before_either_writes(monkeypatch, database, Sql, "scalar")  # begin_rows's check
    changes = [BundleChange("app", "1.0", "t1", COMMIT, key) for key in ("one", "two")]

    def begin(db: Database, change: BundleChange) -> None:
        in_one_transaction(db, lambda: BundleClaims(db).begin_rows(change))

    answers = await asyncio.gather(
        *(db.run(begin, db, change) for db, change in zip((database, replica), changes, strict=True)),
        return_exceptions=True,
    )
    assert sorted(type(a).__name__ for a in answers) == ["Conflict", "NoneType"]
    winner = changes[answers.index(None)]
    assert await BundleClaims(replica).changes() == [winner]


async def test_two_replicas_ending_or_trusting_at_once_do_it_once(database: Database, replica: Database) -> None:
    await TransactionFiles(database).add("t1", FILES)
    await EdgeStore(database).open(transaction("t1", FILES), Path(os.devnull), "sig")
    states = [State.ABORTED, State.EXPIRED]
    ended = await asyncio.gather(
        *(EdgeStore(db).end("t1", state) for db, state in zip((database, replica), states, strict=True))
    )
    assert sorted(ended) == [False, True]
    assert (await EdgeStore(replica).get("t1")).state is states[ended.index(True)]  # type: ignore[union-attr]

    keys = [KeyAlias(f"alias-{i}", fpr * 40, i) for i in range(8) for fpr in "AB"]
    added = await asyncio.gather(
        *(EdgeStore(db).add_key_alias(k) for k, db in zip(keys, [database, replica] * 8, strict=True))
    )
    for i in range(8):
        (one, one_added), (two, two_added) = added[2 * i : 2 * i + 2]
        assert one == two and sorted([one_added, two_added]) == [False, True]
    assert len(await EdgeStore(database).key_aliases()) == 8
