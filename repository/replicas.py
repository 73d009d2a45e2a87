"""What replicas sharing one PostgreSQL database agree on besides its rows: locks, and news of changes.

On sqlite the processes serving a node are on one machine and share a lock file and a counter
in memory (``file_locks.py``, ``generation.py``). Replicas on PostgreSQL may be on different
machines, so both go through the database:

- **Locks** are PostgreSQL advisory locks, taken with ``pg_try_advisory_lock`` on one session
  per process (``Coordination``), polled with a short backoff like the file locks, so no thread
  waits on a lock another replica may hold for minutes. Within a process an asyncio lock per key
  comes first, so one session can hold every lock of its process. A replica that dies loses its
  session, and PostgreSQL drops its locks with it.
- **Changes** are announced with ``NOTIFY`` after the commit that made them (``Database.changed``);
  every process ``LISTEN``s on a connection of its own (``ChangeListener``) and marks its hot
  copies stale when another process's notice arrives, which happens within milliseconds. When
  the listening connection is lost (PostgreSQL restarted) notices may have been missed, so the
  copies are dropped again once it is back.

A replica killed between its commit and its notice leaves the others' copies as they were
until the next change; the copies are of entries read on every request (repos, tokens, rules,
catalog entries), and a deleted file's entry then answers as a missing blob, never as other bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from .file_locks import ProcessLocks

log = logging.getLogger(__name__)

CHANNEL = "node_changed"
# Seconds between tries while another replica holds a lock: from the first to the last.
POLL_FIRST = 0.002
POLL_MAX = 0.1
# Seconds before the listener tries again to reach a database it lost.
RECONNECT = 0.5


def _key(kind: str, key: str) -> int:
    """A signed 64-bit advisory lock key for ``kind``/``key``."""
    return int.from_bytes(hashlib.sha256(f"{kind}\0{key}".encode()).digest()[:8], "big", signed=True)


class Coordination:
    """One session per process for its advisory locks and its change notices, on a thread of its own."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-coordination")
        self._connection: sa.Connection | None = None
        self.origin = uuid.uuid4().hex  # this process, in its notices

    def _session(self) -> sa.Connection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self._connection = self._engine.connect()
        return self._connection

    def _call(self, sql: str, params: Mapping[str, object]) -> object:
        try:
            return self._session().execute(sa.text(sql), params).scalar()
        except sa.exc.DBAPIError:
            self._drop()
            raise

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    async def _run(self, sql: str, params: dict[str, object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, sql, params)

    async def try_lock(self, key: int) -> bool:
        return bool(await self._run("SELECT pg_try_advisory_lock(:key)", {"key": key}))

    async def unlock(self, key: int) -> None:
        await self._run("SELECT pg_advisory_unlock(:key)", {"key": key})

    def notify(self) -> None:
        """Tell the other processes something changed (after the commit); does not wait."""
        future = asyncio.get_running_loop().run_in_executor(
            self._thread, self._call, "SELECT pg_notify(:channel, :origin)", {"channel": CHANNEL, "origin": self.origin}
        )
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        self._thread.submit(self._drop).result()
        self._thread.shutdown(wait=True)


def _log_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("could not tell the other replicas of a change: %s", future.exception())


class AdvisoryLocks(ProcessLocks):
    """One kind of lock across every replica and process: the interface of ``FileLocks``."""

    def __init__(self, coordination: Coordination, kind: str) -> None:
        super().__init__()
        self._coordination = coordination
        self.kind = kind

    @contextlib.asynccontextmanager
    async def __call__(self, key: str = "") -> AsyncIterator[None]:
        """Hold ``key`` in every process of every replica."""
        async with self.local(key):
            number = _key(self.kind, key)
            delay = POLL_FIRST
            while not await self._coordination.try_lock(number):
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
            try:
                yield
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):  # a lost session has dropped the lock already
                    await asyncio.shield(self._coordination.unlock(number))

    def close(self) -> None:
        """Nothing of its own: the session is the ``Coordination``'s."""


class ChangeListener:
    """A thread that ``LISTEN``s for other processes' change notices and calls ``stale`` (on the
    event loop) for each, and once more whenever it reconnects after losing the database."""

    def __init__(self, url: str, origin: str, stale: Callable[[], None]) -> None:
        self._dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._origin = origin
        self._stale = stale
        self._loop = asyncio.get_running_loop()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="db-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._connected.wait(timeout=10)

    def _listen(self) -> None:
        import psycopg  # here: a node on sqlite, the embedded default, never loads the driver

        first = True
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:  # notices sent while it was away are lost: drop every copy
                        self._loop.call_soon_threadsafe(self._stale)
                    first = False
                    self._connected.set()
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            if notice.payload != self._origin:
                                self._loop.call_soon_threadsafe(self._stale)
            except psycopg.Error as exc:
                if not self._stopping.is_set():
                    log.warning("lost the database's change notices (%s); listening again", exc)
                    self._stopping.wait(RECONNECT)
            except RuntimeError:  # the event loop closed under it: the process is stopping
                return

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
