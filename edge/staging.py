"""Where blobs of open transactions land while they arrive: ``staging/{transaction}/{sha256}.part``.

A blob is streamed to a file (never held in memory) and hashed while it is written;
a dropped connection leaves the bytes received so far, so the sender resumes from
there. Every file operation and all hashing run in a worker thread, megabytes at a
time, so the event loop never waits on the disk.

Where the filesystem allows, the bytes go to disk with direct I/O (``O_DIRECT``), from
one aligned buffer per upload, not through the page cache. The blob must reach the disk
before its commit anyway (it is fsynced); through the page cache that costs a copy into
freshly allocated cache pages and a writeback of them, which on the edges measured was
the largest single cost of receiving a blob, larger than hashing it (bench/distribute.py).
Reading a blob back later goes through the page cache as usual.

On a blob store that several machines share (S3), blobs are staged in the store itself
instead, so that any replica can continue them (edge/shared_staging.py); the manifests of
starts (``scratch``) stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import select
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from storage_backends import StorageBackend, open_in_thread
from storage_backends.linux import start_writeback

from .pace import PaceGuard

log = logging.getLogger(__name__)

# Names of manifests on their way in, or checked again at commit (staging.scratch): never a
# transaction id, and gone with the request that made them.
SCRATCH = ".manifest-"

IO_CHUNK = 1024 * 1024
# body chunks handed to a worker thread at once, at most
IO_PIECES = 256


# Bytes written before the disk is asked to start writing them out (see ``start_writeback``).
WRITEBACK_EVERY = 8 * 1024 * 1024
# Direct I/O: offsets, lengths and the buffer's address are multiples of DIRECT_ALIGN (a page,
# which covers 512-byte and 4 KiB sectors); each write is one DIRECT_BUFFER, a typical largest
# request of a disk, so an upload holds at most that much in memory.
DIRECT_ALIGN = 4096
DIRECT_BUFFER = 4 * 1024 * 1024
# Longest a socket receive waits before it looks whether it was asked to stop.
STOP_CHECK = 1.0


def set_direct(fd: int, on: bool) -> bool:
    """Switch direct I/O on or off for an open file; False where the system or filesystem has
    none (the kernel refuses the flag with EINVAL)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct if on else flags & ~direct)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True


class StagedBytes:
    """A blob's bytes on their way into staging, with the sha256 of everything added so far.

    Bytes gather in one buffer of ``capacity`` bytes, copied there from a body's chunks
    (``append``) or received straight into it from a socket (``receive``); a full buffer is
    hashed and kept (``_write_buffer``) in one call. Where they are kept is the subclass's:
    a local file (``StagedFile``), or chunks in a shared blob store (edge/shared_staging.py).
    ``sha256()`` and the store hold every byte once ``close`` has kept the rest.

    Not thread-safe: one upload owns it, and calls its blocking methods via ``asyncio.to_thread``.
    """

    size: int
    _buffer: mmap.mmap | bytearray | None
    _filled: int
    _capacity: int

    def append(self, chunks: Sequence[bytes]) -> None:
        """Add a body's chunks: copied into the buffer, which is kept whenever it fills."""
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                assert self._buffer is not None
                take = min(len(view), self._capacity - self._filled)
                self._buffer[self._filled : self._filled + take] = view[:take]
                self._added(take)
                view = view[take:]

    def receive(self, sock: socket.socket, count: int, guard: PaceGuard, stop: threading.Event) -> None:
        """Receive exactly ``count`` bytes from a non-blocking socket into the buffer, so they are
        copied once, by the kernel. ``guard`` cuts off a slow sender; ``stop`` ends the upload from
        outside (looked at before each receive, and at least every ``STOP_CHECK`` seconds while
        waiting). A sender that closes early raises ConnectionResetError, keeping what arrived."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while count:
            if stop.is_set():
                raise ConnectionAbortedError("the upload was stopped")
            assert self._buffer is not None
            end = self._filled + min(count, self._capacity - self._filled)
            with memoryview(self._buffer) as whole, whole[self._filled : end] as view:
                try:
                    got = sock.recv_into(view)
                except BlockingIOError:
                    got = None
            if got is None:
                self._wait(poller, guard, stop)
                continue
            if got == 0:
                raise ConnectionResetError(f"the sender closed the connection {count} bytes before the end")
            guard.received += got
            guard.check(time.monotonic())
            count -= got
            self._added(got)

    @staticmethod
    def _wait(poller: select.poll, guard: PaceGuard, stop: threading.Event) -> None:
        """Wait until the socket has bytes, the sender breaks its pace (raises), or ``stop`` is set."""
        alarm = guard.alarm()
        timeout = STOP_CHECK if alarm is None else min(STOP_CHECK, max(0.0, alarm - time.monotonic()))
        ready = poller.poll(timeout * 1000)
        if stop.is_set():
            raise ConnectionAbortedError("the upload was stopped")
        if not ready:
            guard.check(time.monotonic())

    def _added(self, n: int) -> None:
        self._filled += n
        self.size += n
        if self._filled == self._capacity:
            self._write_buffer(self._capacity)

    def _write_buffer(self, end: int) -> None:
        """Hash and keep ``buffer[:end]``, and empty the buffer."""
        raise NotImplementedError

    def sha256(self) -> str:
        raise NotImplementedError

    def close(self, *, fsync: bool = True, keep: bool = True) -> None:
        """Let go of the buffer, keeping what it holds (``keep``), or not (the caller drops the blob)."""
        raise NotImplementedError


class StagedFile(StagedBytes):
    """A ``.part`` file opened for appending. Its buffer is page-aligned, of ``DIRECT_BUFFER``
    bytes, and written in one call, with direct I/O where the filesystem has it."""

    _buffer: mmap.mmap | None

    def __init__(self, path: Path, start: int, *, direct: bool = True) -> None:
        """Open at ``start`` bytes: 0 starts over; otherwise the file must hold exactly that many
        bytes, which are read back to rebuild the hash (a resume after a dropped connection).
        ``direct``: write with direct I/O where the filesystem allows it and ``start`` is aligned
        (a resume from the middle of a block goes through the page cache instead)."""
        self.path = path
        self._hash = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if start == 0:
                os.ftruncate(self._fd, 0)
            self.size = 0
            while chunk := os.read(self._fd, IO_CHUNK):
                self._hash.update(chunk)
                self.size += len(chunk)
            if self.size != start:
                raise ValueError(f"{path} holds {self.size} bytes, not {start}")
            self._flushed = self.size
            self._direct = direct and start % DIRECT_ALIGN == 0 and set_direct(self._fd, True)
        except BaseException:
            os.close(self._fd)
            raise
        self._buffer = mmap.mmap(-1, DIRECT_BUFFER)  # page-aligned, as direct I/O needs
        self._capacity = DIRECT_BUFFER
        self._filled = 0

    def _write_buffer(self, end: int) -> None:
        """Hash and write ``buffer[:end]`` and empty the buffer: its whole blocks with direct I/O,
        the rest (a blob's tail) through the page cache, since direct I/O writes whole blocks only.
        A filesystem that turns down a direct write after all (EINVAL) gets this and every later
        byte through the page cache."""
        assert self._buffer is not None
        with memoryview(self._buffer) as whole:
            self._hash.update(whole[:end])
            done = 0
            while done < end:
                stop = end - end % DIRECT_ALIGN if self._direct else end
                if done == stop:  # only a partial block is left: the page cache takes it
                    self._buffered()
                    continue
                with whole[done:stop] as view:
                    try:
                        done += os.write(self._fd, view)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL or not self._direct:
                            raise
                        self._buffered()
        self._filled = 0
        if not self._direct and self.size - self._flushed >= WRITEBACK_EVERY:
            start_writeback(self._fd, self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def _buffered(self) -> None:
        """Go on through the page cache."""
        set_direct(self._fd, False)
        self._direct = False

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self, *, fsync: bool = True, keep: bool = True) -> None:
        """Close, keeping the bytes: the buffer written, and fsynced, so a resume after a power cut
        finds them too, unless the blob is complete and about to be adopted, which fsyncs it once
        itself. ``keep=False``: the caller removes the file; the buffer is not written."""
        try:
            if keep and self._filled:
                self._write_buffer(self._filled)
            if keep and fsync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def scratch(self) -> Path:
        """A new file name for a manifest on its way in or being checked again: its user removes
        the file, and the next start-up's sweep whatever a crash left."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        return self.root / f"{SCRATCH}{uuid.uuid4().hex}"

    def path(self, tx_id: str, sha256: str) -> Path:
        return self.root / tx_id / f"{sha256}.part"

    async def received(self, tx_id: str, sha256: str) -> int:
        """Bytes of this blob staged so far (0 if none)."""
        try:
            return (await asyncio.to_thread(os.stat, self.path(tx_id, sha256))).st_size
        except FileNotFoundError:
            return 0

    async def open(self, tx_id: str, sha256: str, start: int) -> StagedBytes:
        return await asyncio.to_thread(StagedFile, self.path(tx_id, sha256), start)

    async def drop(self, tx_id: str, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(tx_id, sha256))

    async def free(self, tx_id: str) -> None:
        """Remove everything staged for a transaction."""
        await asyncio.to_thread(shutil.rmtree, self.root / tx_id, True)

    async def tidy(self, tx_id: str) -> None:
        """Remove a transaction's staging folder if nothing is staged there any more (a committed
        transaction's, after a repair upload: others may still be staging beside it)."""
        with contextlib.suppress(OSError):
            await asyncio.to_thread(os.rmdir, self.root / tx_id)

    async def sweep(self, keep: Iterable[str]) -> None:
        """Remove the staging of every transaction not in ``keep`` (those no longer OPEN)."""
        await asyncio.to_thread(self._sweep, set(keep))

    def _sweep(self, keep: set[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.root):
            if entry.name not in keep:
                log.info("removing staging of transaction %s, no longer open", entry.name)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)

    async def move_into(self, storage: StorageBackend, tx_id: str, sha256: str, size: int) -> None:
        """Put a complete staged blob, whose sha256 the caller has verified, into the blob store.

        The file itself is adopted where the backend can: renamed into place on the same
        filesystem, its bytes neither copied nor hashed again, which halves the edge's disk and
        CPU work per byte; uploaded straight to its final key on S3, parts in parallel. Elsewhere
        it is streamed through a writer that hashes it again and refuses to publish anything but
        exactly these bytes (``commit(expected=...)``). Either way the staged file is gone afterwards.
        """
        path = self.path(tx_id, sha256)
        if await storage.adopt(path, sha256, size):
            return
        f = await open_in_thread(open, path, "rb")
        try:
            async with await storage.writer(all_digests=False) as writer:
                while chunk := await asyncio.to_thread(f.read, IO_CHUNK):
                    await writer.write(chunk)
                await writer.commit(expected={"sha256": sha256}, expected_size=size)
        finally:
            await asyncio.to_thread(f.close)
        await self.drop(tx_id, sha256)
