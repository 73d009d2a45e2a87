"""Where blobs of open transactions land while they arrive: ``staging/{transaction}/{sha256}.part``.

A blob is streamed to a file (never held in memory) and hashed while it is written;
a dropped connection leaves the bytes received so far, so the sender resumes from
there. Every file operation and all hashing run in a worker thread, a megabyte or
so at a time, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from storage_backends import StorageBackend

log = logging.getLogger(__name__)

IO_CHUNK = 1024 * 1024


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
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, data: bytes | bytearray) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Close, keeping the bytes (fsynced, so a resume after a power cut finds them too)."""
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
        """Stream a complete, verified staged blob into the blob store, then delete it.

        The store hashes it again on the way in and refuses to publish anything but
        exactly these bytes (``commit(expected=...)``), so storage never holds a blob
        under a wrong name, whatever happened to the staged file meanwhile.
        """
        path = self.path(tx_id, sha256)
        f = await asyncio.to_thread(open, path, "rb")
        try:
            async with await storage.writer(all_digests=False) as writer:
                while chunk := await asyncio.to_thread(f.read, IO_CHUNK):
                    await writer.write(chunk)
                await writer.commit(expected={"sha256": sha256}, expected_size=size)
        finally:
            await asyncio.to_thread(f.close)
        await self.drop(tx_id, sha256)
