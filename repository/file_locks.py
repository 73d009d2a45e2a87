"""Locks that hold across every process serving a node (``edge serve --workers N``).

Within a process an asyncio lock per key queues the coroutines that want it; across processes
a POSIX record lock on one byte of a lock file (one file per kind of lock, the byte chosen by
the key's hash) keeps the other workers out. The kernel drops a dead process's record locks,
so a worker killed -9 never leaves one held.

Record locks belong to the process, not to a descriptor: each process keeps one descriptor per
file open for as long as it runs (closing any descriptor of the file would drop all of the
process's locks on it), and coroutines of one process on one key never reach the file at once,
for the asyncio lock comes first. Waiting for another process polls, with a short backoff, so
no thread is parked on a lock another worker may hold for minutes (an upload).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

# Seconds between tries while another process holds the lock: from the first to the last.
POLL_FIRST = 0.001
POLL_MAX = 0.05
# The byte of a key is somewhere in the first 2**56 of the file (which stays empty: a record
# lock may lie beyond the end of the file).
_KEY_BYTES = 7


class ProcessLocks:
    """This process's side of a kind of lock: an asyncio lock per key, which its coroutines take
    before the lock that holds across processes (a file here, the database in ``replicas.py``)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def local(self, key: str) -> asyncio.Lock:
        """This process's lock of ``key`` alone, kept while anyone holds or awaits it."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def locked(self, key: str = "") -> bool:
        """Whether a coroutine of this process holds (or is taking) ``key``."""
        lock = self._locks.get(key)
        return lock is not None and lock.locked()


class FileLocks(ProcessLocks):
    """One kind of lock (``index``, ``transaction``...), by key, in ``directory/<kind>.lock``."""

    def __init__(self, directory: Path, kind: str) -> None:
        super().__init__()
        self.path = directory / f"{kind}.lock"
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextlib.asynccontextmanager
    async def __call__(self, key: str = "") -> AsyncIterator[None]:
        """Hold ``key`` in every process of the node."""
        async with self.local(key):
            fd = self._file()
            offset = key_offset(key)
            await _take(fd, offset)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def key_offset(key: str) -> int:
    """The byte of the lock file that stands for ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:_KEY_BYTES], "big")


async def _take(fd: int, offset: int) -> None:
    delay = POLL_FIRST
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return
        except (BlockingIOError, PermissionError):  # held by another process (EAGAIN or EACCES)
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
