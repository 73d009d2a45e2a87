"""One sqlite connection per node, driven from one worker thread.

sqlite calls block, so none of them run on the event loop. A single thread owns
the connection: writes are naturally serialised (one writer, as sqlite wants) and
a multi-step change runs as one function inside ``db.atomic()``.

A write that finds the disk full is rolled back by sqlite and raised as ``StorageFull``,
which both services answer with 507, as they answer a blob that does not fit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import sqlite_utils
from sqlite_utils import Migrations

from storage_backends import StorageFull

T = TypeVar("T")


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.path.stem}")
        self._db: sqlite_utils.Database | None = None

    async def open(self, *migration_sets: Migrations) -> None:
        await self.run(self._open, migration_sets)

    def _open(self, migration_sets: tuple[Migrations, ...]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed publish survives power loss
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        for migrations in migration_sets:
            migrations.apply(db)
        self._db = db

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the database thread; ``fn`` uses ``self.db``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                raise StorageFull(f"database {self.path}: {exc}") from exc
            raise

    async def check(self) -> None:
        """Raise unless the database thread answers a read of the file (a readiness check)."""
        await self.run(self._check)

    def _check(self) -> None:
        self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("database is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)
