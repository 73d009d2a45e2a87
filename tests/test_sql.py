"""``repository.sql``: a statement written once with named parameters runs on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from repository.db import Database
from repository.sql import Sql


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open()
    yield db
    await db.close()


def _create(db: Sql) -> None:
    db.execute(f"CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, b {'BLOB' if db.dialect == 'sqlite' else 'BYTEA'})")


def _rows(db: Sql) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.execute("SELECT k, n, b FROM t ORDER BY k").fetchall()]


@pytest.mark.parametrize("count", [1, 2, 1000])
async def test_executemany_binds_each_rows_named_values_in_any_order(database: Database, count: int) -> None:
    def fill() -> list[tuple[object, ...]]:
        db = database.db
        _create(db)
        rows = [{"b": None if i % 2 else bytes([i % 256, 0]), "n": i, "k": f"k{i:04}"} for i in range(count)]
        with db.atomic():
            db.executemany("INSERT INTO t (k, n, b) VALUES (:k, :n, :b)", rows)
        db.executemany("UPDATE t SET n = n + 1 WHERE k = :k", [{"k": "k0000"}])  # one name alone
        return _rows(db)

    found = await database.run(fill)
    expected = [(f"k{i:04}", i, None if i % 2 else bytes([i % 256, 0])) for i in range(count)]
    expected[0] = ("k0000", 1, b"\x00\x00")
    assert found == expected


async def test_executemany_of_no_rows_changes_nothing(database: Database) -> None:
    def fill() -> list[tuple[object, ...]]:
        db = database.db
        _create(db)
        db.executemany("INSERT INTO t (k, n, b) VALUES (:k, :n, :b)", [])
        return _rows(db)

    assert await database.run(fill) == []
