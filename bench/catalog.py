"""Catalog lookups and listings with a million artifacts, against bare sqlite3.

Run by hand: ``.venv/bin/python bench/catalog.py [--artifacts N]``. Builds a
catalog of N artifacts (1,000 per folder), then times, through the real
``Catalog`` (a thread hop per call, as the server pays it) and through a bare
sqlite3 query on the same file (the floor): a lookup by (repo, path), a folder
listing, and a deep walk of one folder. Prints the per-call latency of each and
the ratio catalog/bare.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from repository.catalog import Catalog, Repo
from repository.db import Database
from repository.schema import catalog_migrations

PER_FOLDER = 1000


def path_of(i: int) -> str:
    return f"app/{i // PER_FOLDER:05d}/file-{i:08d}.bin"


def build(db_path: Path, count: int) -> None:
    """Fill the schema the service uses, straight through sqlite for speed."""
    conn = sqlite3.connect(db_path)
    conn.execute("BEGIN")
    now = int(time.time() * 1000)
    folders = {("app", "", "app")} | {(f"app/{f:05d}", "app", f"{f:05d}") for f in range(count // PER_FOLDER + 1)}
    conn.executemany(
        "INSERT INTO folders (repo, path, parent, name, created, created_by) VALUES ('r', ?, ?, ?, ?, 'bench')",
        [(p, parent, n, now) for p, parent, n in folders],
    )
    rows = (
        (
            "r",
            path_of(i),
            path_of(i).rpartition("/")[0],
            path_of(i).rpartition("/")[2],
            f"{i:064x}",
            f"{i:040x}",
            f"{i:032x}",
            i,
            "application/octet-stream",
            now,
            "bench",
            now,
            "bench",
            "upload",
            "{}",
        )
        for i in range(count)
    )
    columns = "repo, path, folder, name, sha256, sha1, md5, size, mime_type, created, created_by, modified, modified_by"
    conn.executemany(
        f"INSERT INTO artifacts ({columns}, owner, properties) VALUES ({', '.join('?' * 15)})",
        rows,
    )
    conn.commit()
    conn.close()


async def per_call(fn: Callable[[], Awaitable[object]] | Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        result = fn()
        if asyncio.iscoroutine(result):
            await result
    return (time.perf_counter() - start) / n


async def measure(db_path: Path, count: int, n: int) -> list[tuple[str, float, float]]:
    db = Database(db_path)
    await db.open(catalog_migrations)
    catalog = Catalog(db)
    bare = sqlite3.connect(db_path)
    pick = [path_of(random.randrange(count)) for _ in range(n)]
    it = iter(pick * 3)
    folder = f"app/{count // PER_FOLDER // 2:05d}"

    async def walk() -> None:
        async for _ in catalog.walk_files("r", folder):
            pass

    results = [
        (
            "lookup by path",
            await per_call(lambda: catalog.get_artifact("r", next(it)), n),
            await per_call(
                lambda: bare.execute("SELECT * FROM artifacts WHERE repo='r' AND path=?", (next(it),)).fetchone(), n
            ),
        ),
        (
            "list a folder of 1000",
            await per_call(lambda: catalog.children("r", folder), n // 10),
            await per_call(
                lambda: bare.execute(
                    "SELECT * FROM artifacts WHERE repo='r' AND folder=? ORDER BY name", (folder,)
                ).fetchall(),
                n // 10,
            ),
        ),
        (
            "deep walk of 1000",
            await per_call(walk, n // 10),
            await per_call(
                lambda: bare.execute(
                    "SELECT * FROM artifacts WHERE repo='r' AND path >= ? AND path < ?", (folder + "/", folder + "0")
                ).fetchall(),
                n // 10,
            ),
        ),
    ]
    bare.close()
    await db.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "catalog.db"
        db = Database(db_path)
        await db.open(catalog_migrations)
        await Catalog(db).ensure_repo(Repo("r"))
        await db.close()
        started = time.perf_counter()
        build(db_path, args.artifacts)
        print(
            f"built {args.artifacts:,} artifacts in {time.perf_counter() - started:.1f}s "
            f"({db_path.stat().st_size / 1e6:.0f} MB)"
        )
        print(f"{'operation':<24}{'catalog':>12}{'bare sqlite':>14}{'ratio':>8}")
        for name, ours, floor in await measure(db_path, args.artifacts, args.calls):
            print(f"{name:<24}{ours * 1e6:>10.0f}us{floor * 1e6:>12.0f}us{ours / floor:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
