"""Catalog lookups and listings with a million artifacts, against the bare database driver.

Run by hand: ``.venv/bin/python bench/catalog.py [--artifacts N] [--engine sqlite|postgresql]``.
Builds a catalog of N artifacts (1,000 per folder), then times, through the real ``Catalog``
(a thread hop per call, as the server pays it) and through a bare driver query on the same
tables (the floor: sqlite3 on the file, or psycopg on a PostgreSQL server this script starts
itself, ``devstack.postgres``): a lookup by (repo, path), a folder listing, and a deep walk of
one folder. Prints the per-call latency of each and the ratio catalog/bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from devstack.postgres import PostgresServer
from repository.catalog import Catalog, Repo
from repository.db import Database
from repository.schema import catalog_migrations

PER_FOLDER = 1000


def path_of(i: int) -> str:
    return f"app/{i // PER_FOLDER:05d}/file-{i:08d}.bin"


COLUMNS = (
    "repo, path, folder, name, sha256, sha1, md5, size, mime_type, created, created_by, modified, modified_by,"
    " owner, properties"
)


def artifact_rows(count: int, now: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        path = path_of(i)
        folder, _, name = path.rpartition("/")
        yield (
            *("r", path, folder, name, f"{i:064x}", f"{i:040x}", f"{i:032x}", i, "application/octet-stream"),
            *(now, "bench", now, "bench", "upload", "{}"),
        )


def folder_rows(count: int, now: int) -> list[tuple[Any, ...]]:
    folders = {("app", "", "app")} | {(f"app/{f:05d}", "app", f"{f:05d}") for f in range(count // PER_FOLDER + 1)}
    return [("r", p, parent, n, now, "bench") for p, parent, n in folders]


def bare_connection(target: str) -> Any:
    """The driver's own connection to the catalog: sqlite3 on the file, psycopg on PostgreSQL."""
    if "://" in target:
        return psycopg.connect(target.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    return sqlite3.connect(target)


def build(target: str, count: int) -> None:
    """Fill the schema the service uses, straight through the driver for speed (COPY on PostgreSQL)."""
    now = int(time.time() * 1000)
    conn = bare_connection(target)
    if isinstance(conn, sqlite3.Connection):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO folders (repo, path, parent, name, created, created_by) VALUES (?, ?, ?, ?, ?, ?)",
            folder_rows(count, now),
        )
        conn.executemany(f"INSERT INTO artifacts ({COLUMNS}) VALUES ({', '.join('?' * 15)})", artifact_rows(count, now))
        conn.commit()
    else:
        with conn.cursor() as cur:
            with cur.copy("COPY folders (repo, path, parent, name, created, created_by) FROM STDIN") as copy:
                for row in folder_rows(count, now):
                    copy.write_row(row)
            with cur.copy(f"COPY artifacts ({COLUMNS}) FROM STDIN") as copy:
                for row in artifact_rows(count, now):
                    copy.write_row(row)
            cur.execute("ANALYZE")
    conn.close()


async def per_call(fn: Callable[[], Awaitable[object]] | Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        result = fn()
        if asyncio.iscoroutine(result):
            await result
    return (time.perf_counter() - start) / n


async def measure(target: str, local: Path, count: int, n: int) -> list[tuple[str, float, float]]:
    db = Database(target, local_dir=local)
    await db.open(catalog_migrations)
    catalog = Catalog(db)
    bare = bare_connection(target)
    mark = "?" if isinstance(bare, sqlite3.Connection) else "%s"
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
                lambda: bare.execute(f"SELECT * FROM artifacts WHERE repo='r' AND path={mark}", (next(it),)).fetchone(),
                n,
            ),
        ),
        (
            "list a folder of 1000",
            await per_call(lambda: catalog.children("r", folder), n // 10),
            await per_call(
                lambda: bare.execute(
                    f"SELECT * FROM artifacts WHERE repo='r' AND folder={mark} ORDER BY name", (folder,)
                ).fetchall(),
                n // 10,
            ),
        ),
        (
            "deep walk of 1000",
            await per_call(walk, n // 10),
            await per_call(
                lambda: bare.execute(
                    f"SELECT * FROM artifacts WHERE repo='r' AND path >= {mark} AND path < {mark}",
                    (folder + "/", folder + "0"),
                ).fetchall(),
                n // 10,
            ),
        ),
    ]
    bare.close()
    await db.close()
    return results


@contextlib.contextmanager
def database(engine: str, tmp: Path) -> Iterator[str]:
    """What the catalog opens: a sqlite file, or an empty database on a PostgreSQL server started here."""
    if engine == "sqlite":
        yield str(tmp / "catalog.db")
        return
    with PostgresServer(tmp) as server, server.database() as url:
        yield url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as target:
        local = Path(tmp) / "local"
        db = Database(target, local_dir=local)
        await db.open(catalog_migrations)
        await Catalog(db).ensure_repo(Repo("r"))
        await db.close()
        started = time.perf_counter()
        build(target, args.artifacts)
        print(f"built {args.artifacts:,} artifacts on {args.engine} in {time.perf_counter() - started:.1f}s")
        print(f"{'operation':<24}{'catalog':>12}{'bare ' + args.engine:>16}{'ratio':>8}")
        for name, ours, floor in await measure(target, local, args.artifacts, args.calls):
            print(f"{name:<24}{ours * 1e6:>10.0f}us{floor * 1e6:>14.0f}us{ours / floor:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
