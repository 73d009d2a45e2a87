"""Two Linux calls the os module lacks, through libc: ``sync_file_range`` and ``syncfs``.

Both are optional: elsewhere, or where libc lacks them, the callers fall back to plain
fsync, which is always correct and only slower.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYNC_FILE_RANGE_WRITE = 2


def _libc_call(name: str, *argtypes: Any) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return call  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _libc_call("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNCFS = _libc_call("syncfs", ctypes.c_int)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of the file to disk, without waiting for it.

    Left alone, the bytes of a large upload sit in the page cache until the fsync that
    makes the blob durable, which then writes all of them while the upload waits; the disk
    idles while the network works and the other way round. Started early, the writing
    overlaps the receiving and the final fsync finds little left to do. Only a hint: where
    the call is missing or fails, the fsync still does all the work.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def has_syncfs() -> bool:
    return _SYNCFS is not None


def syncfs(path: Path) -> None:
    """Make everything written to the filesystem holding ``path`` durable: data, inodes and
    directories, with one flush of the disk's cache. Raises OSError as fsync would."""
    assert _SYNCFS is not None, "check has_syncfs() first"
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
