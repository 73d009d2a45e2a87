"""Rows of named parameters bind the same on both engines, as ``text()`` reads them: each
``:name`` in its place (a name may come twice), keys a statement does not name ignored, and
``\\:`` a plain colon. (On sqlite they go to the driver as tuples, for speed.)"""

from __future__ import annotations

from pathlib import Path

from repository.db import Database


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
