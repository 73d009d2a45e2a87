"""Rows of named parameters bind the same on both engines, as ``text()`` reads them: each
``:name`` in its place (a name may come twice), keys a statement does not name ignored, and
``\\:`` a plain colon. (On sqlite they go to the driver as tuples, for speed.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from repository.db import Database
from repository.sql import ROWS_PER_INSERT, _chunk_sizes


async def test_rows_bind_each_named_parameter_in_its_place(db_target: str, tmp_path: Path) -> None:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open()

    def written() -> list[tuple[str, str, str]]:
        db.db.execute("CREATE TABLE t (a TEXT, b TEXT, c TEXT)")
        db.db.executemany(
            "INSERT INTO t (a, b, c) VALUES (:x, :y, :x)", [{"x": "1", "y": "2"}, {"y": "4", "x": "3", "unused": 5}]
        )
        db.db.executemany("INSERT INTO t (a, b, c) VALUES (:only, 'at\\:noon', 'k')", [{"only": "5"}])
        return [tuple(r) for r in db.db.execute("SELECT a, b, c FROM t ORDER BY a")]

    try:
        assert await db.run(written) == [("1", "2", "1"), ("3", "4", "3"), ("5", "at:noon", "k")]
    finally:
        await db.close()


@pytest.mark.parametrize(
    "count", [0, 1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1, 3 * ROWS_PER_INSERT - 1]
)
async def test_rows_given_by_column_are_appended_whole_in_few_statement_texts(
    db_target: str, tmp_path: Path, count: int
) -> None:
    """Every row arrives with its own values, whether an optional column holds a value in no row of
    a statement (left out, so NULL), in one, or in all; and whatever the number of rows, the
    statements are of a few sizes only: each prepared once, then found in the driver's cache."""
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open()
    positions = list(range(count))
    columns = {
        "pos": positions,
        "always": [f"a{i}" for i in positions],
        "rarely": [f"r{i}" if i == count - 1 else None for i in positions],
        "never": [None] * count,
    }

    def written() -> list[tuple[Any, ...]]:
        db.db.execute("CREATE TABLE t (pos BIGINT, always TEXT, rarely TEXT, never TEXT)")
        db.db.insert_columns("t", columns, optional={"rarely", "never"})
        return [tuple(r) for r in db.db.execute("SELECT pos, always, rarely, never FROM t ORDER BY pos")]

    try:
        assert await db.run(written) == list(zip(*columns.values(), strict=True))
    finally:
        await db.close()
    sizes = list(_chunk_sizes(count))
    assert sum(sizes) == count
    assert set(sizes) <= {ROWS_PER_INSERT} | {1 << shift for shift in range(ROWS_PER_INSERT.bit_length() - 1)}
