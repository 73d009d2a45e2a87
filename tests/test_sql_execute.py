"""``Sql.execute``: one statement with named parameters, handed to the driver as it takes them,
answers the same on both engines, whatever the statement or the mapping holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from repository.db import Database
from repository.sql import Sql


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open()

    def create() -> None:
        db.db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT)")
        db.db.executemany("INSERT INTO t (k, n) VALUES (:k, :n)", [{"k": f"k{i}", "n": i} for i in range(5)])

    await db.run(create)
    yield db
    await db.close()


async def on(database: Database, fn: Callable[[Sql], Any]) -> Any:
    return await database.run(lambda: fn(database.db))


async def test_named_parameters_bind_by_name_however_often_and_in_whatever_order_they_appear(
    database: Database,
) -> None:
    def query(db: Sql) -> list[tuple[Any, ...]]:
        sql = "SELECT k, n FROM t WHERE n >= :low AND (n < :high OR k = :k) AND n <> :high - 1 ORDER BY k"
        return [tuple(r) for r in db.execute(sql, {"k": "k4", "high": 3, "low": 1, "unused": "ignored"})]

    assert await on(database, query) == [("k1", 1), ("k4", 4)]


async def test_a_statement_without_parameters_keeps_its_literal_percent_signs_and_colons(database: Database) -> None:
    def query(db: Sql) -> list[Any]:
        return [
            db.scalar("SELECT '100%' || ' a:b'"),
            db.scalar("SELECT count(*) FROM t WHERE k LIKE 'k%'", {}),
            db.scalar("SELECT '50%' || :word", {"word": " off"}),
        ]

    assert await on(database, query) == ["100% a:b", 5, "50% off"]


@pytest.mark.parametrize("count", [0, 1, 2, 3])
async def test_a_list_value_still_expands_into_as_many_parameters(database: Database, count: int) -> None:
    def query(db: Sql) -> list[str]:
        keys = [f"k{i}" for i in range(count)]
        return [
            k for (k,) in db.execute("SELECT k FROM t WHERE k IN :keys AND n >= :n ORDER BY k", {"keys": keys, "n": 0})
        ]

    assert await on(database, query) == [f"k{i}" for i in range(count)]


@pytest.mark.parametrize("values", [[1], [1, 3]])
async def test_a_list_of_integers_matches_an_integer_column(database: Database, values: list[int]) -> None:
    def query(db: Sql) -> list[int]:
        return [n for (n,) in db.execute("SELECT n FROM t WHERE n IN :ns ORDER BY n", {"ns": values})]

    assert await on(database, query) == values


async def test_writes_answer_their_row_counts_and_returned_rows(database: Database) -> None:
    def change(db: Sql) -> tuple[int, list[tuple[Any, ...]]]:
        updated = db.execute("UPDATE t SET n = n + :by WHERE n < :below", {"by": 10, "below": 2}).rowcount
        gone = [tuple(r) for r in db.execute("DELETE FROM t WHERE n >= :n RETURNING k, n", {"n": 10})]
        return updated, sorted(gone)

    assert await on(database, change) == (2, [("k0", 10), ("k1", 11)])
