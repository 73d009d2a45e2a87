"""Where blobs of open transactions land while they arrive: ``staging/{transaction}/{sha256}.part``.

A blob is streamed to a file (never held in memory) and hashed while it is written;
a dropped connection leaves the bytes received so far, so the sender resumes from
there. Every file operation and all hashing run in a worker thread, a megabyte or
so at a time, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from storage_backends import StorageBackend

log = logging.getLogger(__name__)

IO_CHUNK = 1024 * 1024
# chunks handed to one writev at most, well below any system's IOV_MAX (1024 on Linux)
IO_PIECES = 256


# Bytes written before the disk is asked to start writing them out (see ``start_writeback``).
WRITEBACK_EVERY = 8 * 1024 * 1024


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's ``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return lambda fd, offset, length: call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of the file to disk, without waiting for it.

    Left alone, the bytes of a large upload sit in the page cache until the fsync that
    makes the blob durable, which then writes all of them while the upload waits; the disk
    idles while the network works and the other way round. Started early, the writing
    overlaps the receiving and the final fsync finds little left to do. Only a hint: where
    the call is missing or fails, the fsync still does all the work.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length)


class StagedFile:
    """A ``.part`` file opened for appending, with the sha256 of everything in it so far.

    Not thread-safe: one upload owns it, and calls its blocking methods via ``asyncio.to_thread``.
    """

    def __init__(self, path: Path, start: int) -> None:
        """Open at ``start`` bytes: 0 starts over; otherwise the file must hold exactly that many
        bytes, which are read back to rebuild the hash (a resume after a dropped connection)."""
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
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, chunks: Sequence[bytes]) -> None:
        """Hash and write the body's chunks as they came (one ``writev``), not first joined:
        joining would copy every byte of the upload once more."""
        total = 0
        for chunk in chunks:
            self._hash.update(chunk)
            total += len(chunk)
        written = os.writev(self._fd, chunks) if chunks else 0
        if written < total:  # a short write, rare: the rest one buffer at a time
            view = memoryview(b"".join(chunks))[written:]
            while view:
                view = view[os.write(self._fd, view) :]
        self.size += total
        if self.size - self._flushed >= WRITEBACK_EVERY:
            start_writeback(self._fd, self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self, *, fsync: bool = True) -> None:
        """Close, keeping the bytes: fsynced, so a resume after a power cut finds them too, unless
        the blob is complete and about to be adopted, which fsyncs it once itself."""
        if fsync:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        os.close(self._fd)


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tx_id: str, sha256: str) -> Path:
        return self.root / tx_id / f"{sha256}.part"

    async def received(self, tx_id: str, sha256: str) -> int:
        """Bytes of this blob staged so far (0 if none)."""
        try:
            return (await asyncio.to_thread(os.stat, self.path(tx_id, sha256))).st_size
        except FileNotFoundError:
            return 0

    async def open(self, tx_id: str, sha256: str, start: int) -> StagedFile:
        return await asyncio.to_thread(StagedFile, self.path(tx_id, sha256), start)

    async def drop(self, tx_id: str, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(tx_id, sha256))

    async def free(self, tx_id: str) -> None:
        """Remove everything staged for a transaction."""
        await asyncio.to_thread(shutil.rmtree, self.root / tx_id, True)

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

        The file itself is adopted where the backend can (same filesystem): its bytes are
        neither copied nor hashed again, which halves the edge's disk and CPU work per byte.
        Elsewhere it is streamed through a writer that hashes it again and refuses to publish
        anything but exactly these bytes (``commit(expected=...)``). Either way the staged file
        is gone afterwards.
        """
        path = self.path(tx_id, sha256)
        if await storage.adopt(path, sha256, size):
            return
        f = await asyncio.to_thread(open, path, "rb")
        try:
            async with await storage.writer(all_digests=False) as writer:
                while chunk := await asyncio.to_thread(f.read, IO_CHUNK):
                    await writer.write(chunk)
                await writer.commit(expected={"sha256": sha256}, expected_size=size)
        finally:
            await asyncio.to_thread(f.close)
        await self.drop(tx_id, sha256)
