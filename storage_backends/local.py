"""Blobs on a local filesystem, in one level of sharded directories: ``blobs/ab/abcd...``.

One level, as Artifactory's filestore and git's objects have: 256 directories hold a
million blobs comfortably, and a second level costs a directory per new blob, which on
ext4 is the dearest part of storing a small one (each new directory is placed by a
scan of the block groups). Stores written with the earlier ``blobs/ab/cd/`` layout are
moved to this one when opened (``_flatten``).

Durability follows POSIX rules: bytes go to a temp file on the same filesystem,
which is fsynced, renamed into place with ``os.replace`` and followed by an
fsync of both directories, so after a crash a blob is whole or absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR

import aiofiles

from .base import (
    READ_CHUNK,
    BlobInfo,
    BlobWriter,
    Digests,
    MultiHasher,
    StorageBackend,
    check_range,
    check_sha256,
    verify_digests,
)
from .errors import BlobNotFound, BlobsNotDeleted, DigestMismatch, StorageError, os_storage_error
from .linux import has_syncfs, syncfs

log = logging.getLogger(__name__)

FLUSH_AT = 1024 * 1024  # hash and write in a worker thread a megabyte at a time
STALE_TEMP_SECONDS = 3600


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter(BlobWriter):
    def __init__(self, backend: LocalBackend, all_digests: bool) -> None:
        self._backend = backend
        self._hasher = MultiHasher(all_digests)
        self._buffer = bytearray()
        self._temp = backend.temp_dir / uuid.uuid4().hex
        self._fd: int | None = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._done = False

    @property
    def size(self) -> int:
        return self._hasher.size + len(self._buffer)

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or cancel")
        self._buffer += data
        if len(self._buffer) >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        chunk, self._buffer = self._buffer, bytearray()
        if chunk:
            await asyncio.to_thread(self._write_chunk, chunk)

    def _write_chunk(self, chunk: bytearray) -> None:
        assert self._fd is not None
        self._hasher.update(chunk)
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise os_storage_error(exc, "write failed") from exc

    async def commit(self, *, expected: Mapping[str, str] | None = None, expected_size: int | None = None) -> Digests:
        if self._done:
            raise StorageError("commit after commit or cancel")
        try:
            await self._flush()
            digests = self._hasher.digests()
            verify_digests(digests, expected, expected_size)
            await asyncio.to_thread(self._publish, digests.sha256)
        except BaseException:
            await self.cancel()
            raise
        self._done = True
        return digests

    def _publish(self, sha256: str) -> None:
        assert self._fd is not None
        final = self._backend.blob_path(sha256)
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if final.exists():
                os.unlink(self._temp)  # same bytes already stored: nothing to publish
                return
            created = _make_dirs(final.parent)
            os.replace(self._temp, final)
            for directory in (final.parent, *reversed(created), self._temp.parent):
                _fsync_dir(directory)
        except OSError as exc:
            raise os_storage_error(exc, f"publishing blob {sha256} failed") from exc

    async def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


def _discard_made(made: asyncio.Future[LocalWriter]) -> None:
    """Remove the temp file of a writer made for a caller that was cancelled meanwhile."""
    if not made.cancelled() and made.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, made.result()._discard)


class LocalBackend(StorageBackend):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.blob_dir = self.root / "blobs"
        self.temp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / shard_path(sha256)

    async def open(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        _flatten(self.blob_dir)
        # Temp files of writers that died with their process. Another process may
        # share this root, so only old ones are removed.
        cutoff = time.time() - STALE_TEMP_SECONDS
        for entry in os.scandir(self.temp_dir):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                log.info("removed stale temp file %s", entry.path)

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        for folder in (self.blob_dir, self.temp_dir):
            try:
                st = os.stat(folder)
            except OSError as exc:
                raise os_storage_error(exc, f"storage folder {folder}") from None
            if not S_ISDIR(st.st_mode) or not os.access(folder, os.W_OK | os.X_OK):
                raise StorageError(f"storage folder {folder} is not a writable directory")

    async def writer(self, *, all_digests: bool = True) -> BlobWriter:
        made = asyncio.ensure_future(asyncio.to_thread(LocalWriter, self, all_digests))
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            # The thread makes the temp file whether or not anyone still waits for it; the
            # caller can no longer cancel the writer, so it is discarded here once made.
            made.add_done_callback(_discard_made)
            raise
        except OSError as exc:
            raise os_storage_error(exc, "cannot start a blob") from exc

    async def stat(self, sha256: str) -> BlobInfo:
        path = self.blob_path(sha256)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        modified = datetime.fromtimestamp(st.st_mtime, tz=UTC)
        return BlobInfo(sha256=sha256, size=st.st_size, modified=modified)

    async def sizes(self, sha256s: Sequence[str]) -> dict[str, int]:
        paths = {sha256: self.blob_path(sha256) for sha256 in sha256s}
        try:
            return await asyncio.to_thread(_sizes, paths)
        except OSError as exc:
            raise os_storage_error(exc, "reading the sizes of blobs failed") from exc

    async def read(self, sha256: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        path = self.blob_path(sha256)
        try:
            size = (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        remaining = check_range(sha256, size, offset, length)
        # The file is opened by the stream itself, so a stream that is never iterated holds nothing open.
        return self._stream(path, sha256, offset, remaining)

    async def read_many(self, sha256s: Sequence[str]) -> list[bytes]:
        paths = [(sha256, self.blob_path(sha256)) for sha256 in sha256s]
        try:
            return await asyncio.to_thread(_read_files, paths)
        except OSError as exc:
            raise os_storage_error(exc, "reading blobs failed") from exc

    @staticmethod
    async def _stream(path: Path, sha256: str, offset: int, remaining: int) -> AsyncGenerator[bytes, None]:
        if remaining == 0:
            return
        if remaining <= READ_CHUNK:  # a small blob: open, read and close in one worker-thread trip
            try:
                yield await asyncio.to_thread(_read_window, path, offset, remaining)
            except FileNotFoundError:
                raise BlobNotFound(sha256) from None
            return
        try:
            f = await aiofiles.open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        try:
            await f.seek(offset)
            while remaining > 0:
                chunk = await f.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise StorageError("blob shorter than its recorded size")
                remaining -= len(chunk)
                yield chunk
        finally:
            await f.close()

    async def delete(self, sha256: str) -> None:
        path = self.blob_path(sha256)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    async def delete_many(self, sha256s: Sequence[str]) -> None:
        """Unlink them all in one worker-thread trip (durable no more than ``delete`` is)."""
        paths = {self.blob_path(sha256): sha256 for sha256 in sha256s}
        failed = await asyncio.to_thread(_unlink_all, list(paths))
        if failed:
            reason = os_storage_error(failed[-1][1], "deleting blobs failed")
            raise BlobsNotDeleted([paths[path] for path, _ in failed], str(reason))

    async def list(self) -> AsyncGenerator[str, None]:  # type: ignore[override]
        for shard in await asyncio.to_thread(_sorted_dirs, self.blob_dir):
            for name in await asyncio.to_thread(os.listdir, shard):
                yield name

    async def quarantine(self, sha256: str) -> str:
        source = self.blob_path(sha256)
        try:
            return await asyncio.to_thread(self._quarantine, source, sha256)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        except OSError as exc:
            raise os_storage_error(exc, f"quarantining blob {sha256} failed") from exc

    def _quarantine(self, source: Path, sha256: str) -> str:
        """A rename into ``quarantine/`` beside ``blobs/`` (one filesystem), both folders fsynced."""
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / f"{sha256}.{time.time_ns()}"
        os.replace(source, target)
        _fsync_dir(source.parent)
        _fsync_dir(self.quarantine_dir)
        return str(target)

    async def adopt(self, path: Path, sha256: str, size: int) -> bool:
        return await asyncio.to_thread(self._adopt, Path(path), sha256, size)

    def _adopt(self, path: Path, sha256: str, size: int) -> bool:
        """fsync the file (its bytes must be on disk before its new name is), rename it into
        place, fsync the blob's directory. The source directory is not fsynced: after a crash
        the old name can only come back as a leftover the caller already knows how to clean."""
        final = self.blob_path(sha256)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                found = os.fstat(fd).st_size
                if found != size:
                    raise DigestMismatch("size", size, found)
                os.fsync(fd)
            finally:
                os.close(fd)
            if final.exists():
                os.unlink(path)  # same bytes already stored: keep them
                _fsync_dir(final.parent)  # durable even if a concurrent adopt has not fsynced it yet
                return True
            created = _make_dirs(final.parent)
            try:
                os.replace(path, final)
            except OSError as exc:
                if exc.errno == errno.EXDEV:  # another filesystem: the caller streams instead
                    return False
                raise
            for directory in (final.parent, *reversed(created)):
                _fsync_dir(directory)
        except OSError as exc:
            raise os_storage_error(exc, f"adopting blob {sha256} failed") from exc
        return True

    async def write_many(self, blobs: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        for sha256, _ in blobs:
            check_sha256(sha256)
        await asyncio.to_thread(self._write_many, blobs)

    def _write_many(self, blobs: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        """Each blob checked against its sha256 and written to a temp file; then the temp files
        are made durable and renamed into place. Where Linux offers ``syncfs`` that is one call
        and one flush of the disk's cache for the whole group, not an fsync per file, and the
        new names are made durable by ``sync()`` (once per commit, not once per group): small
        blobs are bound by those flushes, not by their bytes. A name lost in a crash loses a
        blob that is whole, never one that is not. Without syncfs: an fsync per file, and per
        directory after the renames. A blob that does not match its sha256 stops the group;
        the blobs before it are still published, then DigestMismatch is raised."""
        written: list[tuple[Path, Path]] = []  # (temp, final)
        held: list[Path] = []  # already stored, perhaps by a writer that has not made it durable yet
        mismatch: DigestMismatch | None = None
        try:
            try:
                for sha256, chunks in blobs:
                    digest = hashlib.sha256()
                    for chunk in chunks:
                        digest.update(chunk)
                    if digest.hexdigest() != sha256:
                        mismatch = DigestMismatch("sha256", sha256, digest.hexdigest())
                        break
                    final = self.blob_path(sha256)
                    if final.exists():
                        held.append(final.parent)
                        continue
                    written.append((self._write_temp(chunks, fsync=not has_syncfs()), final))
                self._publish_many(written, held)
            except BaseException:
                for temp, _ in written:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
                raise
        except OSError as exc:
            raise os_storage_error(exc, "storing blobs failed") from exc
        if mismatch is not None:
            raise mismatch

    def _publish_many(self, written: Sequence[tuple[Path, Path]], held: Sequence[Path]) -> None:
        if written and has_syncfs():
            syncfs(self.temp_dir)  # every temp file's bytes durable before any name points at them
        touched: dict[Path, None] = dict.fromkeys(held)
        for temp, final in written:
            created = _make_dirs(final.parent)
            os.replace(temp, final)
            touched.update(dict.fromkeys((final.parent, *reversed(created))))
        if not has_syncfs():
            for directory in touched:
                _fsync_dir(directory)

    async def sync(self) -> None:
        if has_syncfs():
            try:
                await asyncio.to_thread(syncfs, self.blob_dir)
            except OSError as exc:
                raise os_storage_error(exc, "making stored blobs durable failed") from exc

    def _write_temp(self, chunks: Sequence[bytes], *, fsync: bool) -> Path:
        temp = self.temp_dir / uuid.uuid4().hex
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        os.close(fd)
        return temp

    async def local_path(self, sha256: str) -> Path | None:
        return self.blob_path(sha256)


def shard_path(sha256: str) -> str:
    """A blob's path under the blob directory, ``ab/abcd...``."""
    check_sha256(sha256)
    return f"{sha256[:2]}/{sha256}"


def _flatten(blob_dir: Path) -> None:
    """Move blobs of the earlier two-level layout (``ab/cd/abcd...``) to ``ab/abcd...``.

    Each move is a rename within one filesystem, so a blob is always at one of its two
    places, whole; the new directory is fsynced before the old one is removed, and a
    crash part way leaves the rest for the next open to move.
    """
    for shard in _sorted_dirs(blob_dir):
        for old in _sorted_dirs(shard):
            for entry in os.scandir(old):
                os.replace(entry.path, shard / entry.name)
            _fsync_dir(shard)
            old.rmdir()
            _fsync_dir(shard)
            log.info("moved the blobs of %s to the one-level layout", old)


def _sizes(paths: Mapping[str, Path]) -> dict[str, int]:
    sizes = {}
    for sha256, path in paths.items():
        with contextlib.suppress(FileNotFoundError):
            sizes[sha256] = os.stat(path).st_size
    return sizes


def _read_files(paths: Sequence[tuple[str, Path]]) -> list[bytes]:
    found = []
    for sha256, path in paths:
        try:
            with open(path, "rb") as f:
                found.append(f.read())
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
    return found


def _read_window(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), length, offset)
    if len(data) < length:
        raise StorageError("blob shorter than its recorded size")
    return data


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p, answering the parents of the directories it created: the caller fsyncs them
    after its rename (with the blob's own directory first, so on a journalling filesystem they
    cost next to nothing), so a published blob's whole path survives a crash, not only its last link."""
    if path.is_dir():
        return []
    created = _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return created
    return [*created, path.parent]


def _unlink_all(paths: Sequence[Path]) -> list[tuple[Path, OSError]]:
    """Unlink every path (a missing one is fine); each that failed, with why."""
    failed = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append((path, exc))
    return failed


def _sorted_dirs(path: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir())
