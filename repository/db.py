"""A node's database, sqlite (embedded, one file) or PostgreSQL (shared by replicas): a writer
thread, and reader threads beside it.

Database calls block, so none of them run on the event loop. One thread owns the
writing connection: writes are naturally serialised (one writer, as sqlite wants) and
a multi-step change runs as one function inside ``db.atomic()``. Short reads that a
client waits for (a download's lookup, a status) go to a second, read-only connection
on a thread of their own: in WAL mode a reader never waits for the writer, so they do
not queue behind a page of a bundle's publish or a bulk load. ``Database.db`` is the
connection of the thread a function runs on, so the same code serves both.

Space comes back: the file is in ``auto_vacuum=INCREMENTAL`` mode (an older file is
converted once, by a VACUUM at open), ``reclaim`` hands free pages back to the file
system a bounded step at a time after a big delete, and the WAL is truncated after.

A write that finds the disk full is rolled back by sqlite and raised as ``StorageFull``,
which both services answer with 507, as they answer a blob that does not fit.

On PostgreSQL (``Database("postgresql://...")``) the threads are the same, each with its own
connection; the file-only parts (vacuum modes, WAL, reclaim) do not apply. Every statement goes
through ``repository.sql``, which compiles it for the engine at hand.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlite_utils
from sqlite_utils import Migrations

from storage_backends import StorageFull

from .file_locks import FileLocks
from .generation import HotCopies, generation_path
from .replicas import AdvisoryLocks, ChangeListener, Coordination
from .sql import SQLITE, Sql, engine_for, retryable

log = logging.getLogger(__name__)

T = TypeVar("T")

AUTO_VACUUM_INCREMENTAL = 2
# The WAL is cut back to this size after a checkpoint, so one big transaction does not
# leave a WAL of its size behind for good.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Free pages handed back per step of ``reclaim`` (4 MiB with 4 KiB pages): each step is
# one short write, so other writes are not held up for long.
RECLAIM_PAGES = 1024


# Times a transaction that lost a race with another replica's (PostgreSQL) is run again.
RACE_TRIES = 8
RACE_BACKOFF = 0.002  # seconds: the first retry's wait is at most twice this, doubling


def _on_connect(dbapi_connection: Any, _record: object) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA busy_timeout=5000")
    else:
        # PostgreSQL: statements run in autocommit (``Sql.atomic`` opens transactions). The
        # engine's option sets it on the first connection only: one made again after the server
        # went away (``Sql.forget_lost_connection``) would keep every later write in a
        # transaction never committed, seen by no other connection.
        dbapi_connection.autocommit = True


def local_files_path(target: str | Path, local_dir: Path | None) -> Path:
    """What the files this machine's processes of a node share (the generation counter, lock
    files) are named after: the sqlite file itself, or ``local_dir/database`` beside PostgreSQL."""
    text = str(target)
    if "://" not in text:
        return Path(text)
    if text.startswith("sqlite"):
        return Path(sa.make_url(text).database or "")
    if local_dir is None:
        raise ValueError("a PostgreSQL database needs a local_dir for this machine's own files")
    return local_dir / "database"


class Database:
    def __init__(self, target: str | Path, *, local_dir: Path | None = None) -> None:
        """``target``: a sqlite file's path, or a database URL (``sqlite:///...``, ``postgresql://...``).

        ``path`` is the sqlite file; with PostgreSQL it is ``local_dir/database``, a name the
        files this machine's processes share (the generation counter, lock files) are named after.
        """
        url = str(target) if "://" in str(target) else None
        self.url = url or f"sqlite:///{target}"
        self.engine = engine_for(self.url)
        sa.event.listen(self.engine, "connect", _on_connect)
        self.dialect = self.engine.dialect.name
        self.path = local_files_path(target, local_dir)
        label = self.path.stem if self.dialect == SQLITE else sa.make_url(self.url).database or "pg"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{label}")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{label}-read")
        self._walker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{label}-walk")
        self._local = threading.local()
        self._db: Sql | None = None
        self._read_db: Sql | None = None
        self._walk_db: Sql | None = None
        # what this process keeps copies of; other processes serving the file say when they change
        self.copies = HotCopies()
        self._file_locks: dict[str, FileLocks | AdvisoryLocks] = {}
        # replicas on PostgreSQL share locks and change notices through the database (replicas.py)
        self._coordination: Coordination | None = None
        self._listener: ChangeListener | None = None

    async def open(self, *migration_sets: Migrations) -> None:
        await self.run(self._open, migration_sets)
        self._read_db = await self.read(self._open_reader)
        self._walk_db = await self.walk(self._open_reader)
        self.copies.open(generation_path(self.path))
        if self.dialect != SQLITE:
            self._coordination = Coordination(self.engine)
            self._listener = ChangeListener(self.url, self._coordination.origin, self.copies.changed_elsewhere)
            await asyncio.to_thread(self._listener.start)

    def locks(self, kind: str) -> FileLocks | AdvisoryLocks:
        """The locks of ``kind`` that every process serving this database shares: a lock file on
        sqlite (repository/file_locks.py), advisory locks on PostgreSQL (repository/replicas.py)."""
        found = self._file_locks.get(kind)
        if found is None:
            if self._coordination is not None:
                found = AdvisoryLocks(self._coordination, kind)
            else:
                found = FileLocks(self.path.parent / "locks", kind)
            self._file_locks[kind] = found
        return found

    def changed(self) -> None:
        """After a commit that changed what processes keep copies of (``HotCopies``): this
        machine's processes see the shared counter move; other replicas get a notice."""
        self.copies.changed()
        if self._coordination is not None:
            self._coordination.notify()

    def _open(self, migration_sets: tuple[Migrations, ...]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sql = Sql(self.engine.connect())
        if self.dialect == SQLITE:
            db = sqlite_utils.Database(sql.conn)
            _incremental_vacuum_mode(db, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed publish survives power loss
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            for migrations in migration_sets:
                migrations.apply(db)
        else:
            from .pg_schema import apply_schemas

            apply_schemas(sql, migration_sets)
        self._db = self._local.db = sql

    def _open_reader(self) -> Sql:
        sql = Sql(self.engine.connect())
        if self.dialect == SQLITE:
            sql.execute("PRAGMA query_only=ON")
        self._local.db = sql
        return sql

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the writer thread; ``fn`` uses ``self.db``."""
        return await self._on(self._executor, fn, *args)

    async def run_page(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)``, one page of a bulk change, on the writer thread without waiting for
        the disk at its commit (``synchronous=NORMAL``): a page cut off by a power loss is done
        again (a removal resumes) or undone (a commit rolls back), and the change's last step,
        a normal write, makes every page before it durable, for the WAL is written in order.
        Saves a disk flush per page, which would also flush the blob deletes beside it."""
        return await self._on(self._executor, self._relaxed, fn, *args)

    def _relaxed(self, fn: Callable[..., T], *args: object) -> T:
        if self.dialect != SQLITE:  # PostgreSQL's commit flushes its WAL, shared by every page alike
            return fn(*args)
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            return fn(*args)
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)``, which only reads, on the reader thread: it sees every write committed
        before it starts and never waits for one in progress. Keep it short (one lookup, one
        page): reads queue behind each other; the pages of a long walk go to ``walk``."""
        return await self._on(self._reader, fn, *args)

    async def walk(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)``, one page of a long read (every file of a big bundle, a manifest a
        chunk at a time), on a reader of its own: a status read (``read``) never queues behind
        a push walking 100,000 rows, nor the writer behind either."""
        return await self._on(self._walker, fn, *args)

    async def _on(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        for attempt in range(1, RACE_TRIES + 1):
            try:
                return await loop.run_in_executor(executor, fn, *args)
            except (sqlite3.OperationalError, sa.exc.DBAPIError) as exc:
                if _disk_full(exc):
                    raise StorageFull(f"database {self.label}: {exc}") from exc
                if getattr(exc, "connection_invalidated", False):  # the next call connects again
                    await loop.run_in_executor(executor, lambda: self.db.forget_lost_connection())
                if not retryable(exc) or attempt == RACE_TRIES:
                    raise
                assert isinstance(exc, sa.exc.DBAPIError)  # only PostgreSQL's errors are retryable
                log.info("a transaction lost a race with another replica's; running it again (%s)", exc.orig)
                # apart, at a random moment: two replicas that retry at once would collide again
                await asyncio.sleep(random.uniform(0, RACE_BACKOFF * 2**attempt))
        raise AssertionError("unreachable")

    @property
    def label(self) -> str:
        """The database as logs and errors name it: the file, or the URL without its password."""
        return str(self.path) if self.dialect == SQLITE else sa.make_url(self.url).render_as_string(hide_password=True)

    async def check(self) -> None:
        """Raise unless the database thread answers a read of the file (a readiness check)."""
        await self.run(self._check)

    def _check(self) -> None:
        self.db.execute("SELECT 1").fetchone()

    @property
    def db(self) -> Sql:
        """The connection of the calling thread: the reader's on the reader thread, else the writer's."""
        found = getattr(self._local, "db", None) or self._db
        if found is None:
            raise RuntimeError("database is not open")
        return found

    async def reclaim(self) -> int:
        """Hand the file's free pages back to the file system, ``RECLAIM_PAGES`` per write, then
        truncate the WAL; answers the pages freed. Called after big deletes. (PostgreSQL's
        autovacuum does this on its own: nothing to do there.)"""
        if self.dialect != SQLITE:
            return 0
        freed = 0
        while pages := await self.run_page(self._reclaim_step):
            freed += pages
        await self.run(self._checkpoint)
        return freed

    def _reclaim_step(self) -> int:
        before = self._free_pages()
        if before:  # stepped to its end by executescript (a plain execute frees one page a call)
            self.db.conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
        return before - self._free_pages()

    def _free_pages(self) -> int:
        return int(self.db.execute("PRAGMA freelist_count").scalar_one())

    def _checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def close(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None
        if self._coordination is not None:
            await asyncio.to_thread(self._coordination.close)
            self._coordination = None
        self.copies.close()
        for locks in self._file_locks.values():
            locks.close()
        if self._read_db is not None:
            await self.read(self._read_db.close)
            self._read_db = None
        if self._walk_db is not None:
            await self.walk(self._walk_db.close)
            self._walk_db = None
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._reader.shutdown(wait=True)
        self._walker.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _disk_full(exc: BaseException) -> bool:
    """sqlite's SQLITE_FULL, or PostgreSQL's disk_full (53100)."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.OperationalError):
        return orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    return getattr(orig, "sqlstate", None) == "53100"


def _incremental_vacuum_mode(db: sqlite_utils.Database, path: Path) -> None:
    """Put the file in ``auto_vacuum=INCREMENTAL`` mode. A new file takes it at once; a file
    made before needs one VACUUM, which rewrites it (a while for a big catalog, once)."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
        return
    db.execute(f"PRAGMA auto_vacuum={AUTO_VACUUM_INCREMENTAL}")
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        log.info("converting %s to incremental vacuum (one VACUUM, once)", path)
        db.execute("VACUUM")
