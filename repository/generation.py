"""A node's change counter, shared by every process that serves the node's database.

Processes keep hot copies of what they read on every request (catalog entries, repos,
tokens, users, rules, keys). A process that changes one of them drops its own copy at
once; the others learn of the change from this counter: an 8-byte number in a small file
beside the database, mapped into memory by every process. A change bumps it right after
its commit, and every request first compares it with the value its process last saw
(``moved``): one memory read, no system call, no database round trip. When it moved,
the process drops its copies before it answers.

Why not ``PRAGMA data_version`` or a counter row in sqlite: either costs a query per request
on a database thread (a thread hop on the path of a 4 KiB download), and ``data_version``
moves on every commit, audit records included, so it would drop every copy twice a second.

A process killed between a commit and its bump would leave the others with stale copies:
the supervisor of the workers bumps the counter whenever it finds a worker dead.
Bumps are made under an flock, so two processes never write the same value.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

SIZE = 8
_COUNTER = struct.Struct("<Q")


def generation_path(database: Path) -> Path:
    """The counter's file beside the database it speaks for (``catalog.db-generation``)."""
    return database.with_name(database.name + "-generation")


class SharedGeneration:
    """The counter in ``path`` (made if missing); ``moved`` per request, ``bump`` after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(self._fd).st_size < SIZE:
                os.ftruncate(self._fd, SIZE)
            self._map = mmap.mmap(self._fd, SIZE)
        except BaseException:
            os.close(self._fd)
            raise
        self.seen = self.value

    @property
    def value(self) -> int:
        return int(_COUNTER.unpack_from(self._map, 0)[0])

    def moved(self) -> bool:
        """Whether another process changed something since the last call that answered True."""
        now = self.value
        if now == self.seen:
            return False
        self.seen = now
        return True

    def bump(self) -> None:
        """Tell every process of the node that something it may hold a copy of changed. This
        process's own copies are its own business: when nobody else bumped since it last
        looked, it does not see its own bump as a move."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            before = self.value
            _COUNTER.pack_into(self._map, 0, (before + 1) % (1 << 64))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if before == self.seen:
            self.seen = (before + 1) % (1 << 64)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


# Drops a copy (synchronous) or reloads it (a coroutine), when another process changed something.
Refresh = Callable[[], Awaitable[None] | None]


class HotCopies:
    """What one process keeps copies of, and how each is refreshed when the shared counter moves.

    ``stale`` runs before each request: the fast path is one memory read. When the counter
    moved, every registered refresh runs once, in order, and requests that arrive meanwhile
    ``wait`` for it, so none is answered from a copy older than a change it could have seen.
    Without ``open`` (a database used outside a server) nothing is shared.
    """

    def __init__(self) -> None:
        self.generation: SharedGeneration | None = None
        self._refreshes: list[Refresh] = []
        self._running: asyncio.Future[None] | None = None

    def open(self, path: Path) -> None:
        self.generation = SharedGeneration(path)

    def register(self, refresh: Refresh) -> None:
        self._refreshes.append(refresh)

    def changed(self) -> None:
        """After a commit that changed something other processes may hold a copy of. A refresh
        under way here may have read before it: the next request refreshes again."""
        if self.generation is not None:
            self.generation.bump()
            if self._running is not None and not self._running.done():
                self.generation.seen = -1

    def changed_elsewhere(self) -> None:
        """Another replica changed something (repository/replicas.py): this process's copies go
        before its next request, as if the counter had moved; the other processes hear it themselves."""
        if self.generation is not None:
            self.generation.seen = -1

    def stale(self) -> bool:
        """Before each request (the fast path: one memory read): whether copies are being
        refreshed, which the request must ``wait`` for. Starts the refresh when the counter moved."""
        if self.generation is not None and self.generation.moved():
            self._running = asyncio.ensure_future(self._refresh(self._running))
        return self._running is not None

    async def wait(self) -> None:
        """Until the refresh under way is done; its failure is raised (and the next request tries again)."""
        running = self._running
        if running is None:
            return
        if not running.done():
            await asyncio.shield(running)
        elif self._running is running:
            self._running = None
        running.result()

    async def _refresh(self, before: asyncio.Future[None] | None) -> None:
        """Every refresh, after the one under way; a failure is raised to the requests waiting,
        and the next request tries again."""
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        try:
            for refresh in self._refreshes:
                outcome = refresh()
                if outcome is not None:
                    await outcome
        except BaseException:
            if self.generation is not None:
                self.generation.seen = -1  # never a value: the next look finds it moved
            raise

    def close(self) -> None:
        if self.generation is not None:
            self.generation.close()
            self.generation = None
