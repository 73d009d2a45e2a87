"""Staged uploads on disk: every byte lands, hashed, with direct I/O where the filesystem has it,
from a body's chunks or straight from a socket."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.pace import PaceGuard, UploadPace, UploadTooSlow
from edge.staging import DIRECT_ALIGN, DIRECT_BUFFER, StagedFile


def direct_io(staged: StagedFile) -> bool:
    """Whether the kernel writes this open file with O_DIRECT (its flags in /proc)."""
    flags = next(line for line in Path(f"/proc/self/fdinfo/{staged._fd}").read_text().splitlines() if "flags" in line)
    return bool(int(flags.split()[1], 8) & os.O_DIRECT)


def append_in_pieces(staged: StagedFile, data: bytes, piece: int = 65_537, per_call: int = 5) -> None:
    """As an upload does: odd-sized chunks, several per call."""
    chunks = [data[i : i + piece] for i in range(0, len(data), piece)]
    for i in range(0, len(chunks), per_call):
        staged.append(chunks[i : i + per_call])


BLOCK, BUFFER = DIRECT_ALIGN, DIRECT_BUFFER
SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, BUFFER - 1, BUFFER, 2 * BUFFER + 9]


@pytest.mark.parametrize("size", SIZES)
def test_every_byte_lands_and_is_hashed_with_direct_io(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    staged = StagedFile(tmp_path / "blob.part", 0)
    assert direct_io(staged), "the test's filesystem takes direct I/O, so the staged file uses it"
    append_in_pieces(staged, data)
    assert staged.size == size
    staged.close()
    assert (tmp_path / "blob.part").read_bytes() == data
    assert staged.sha256() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("cut", [5_000, 3 * DIRECT_ALIGN, DIRECT_BUFFER + 7])
def test_a_cut_off_upload_keeps_its_bytes_and_resumes_from_them(tmp_path: Path, cut: int) -> None:
    data = os.urandom(DIRECT_BUFFER + 100_000)
    path = tmp_path / "blob.part"
    first = StagedFile(path, 0)
    append_in_pieces(first, data[:cut])
    first.close()  # the connection dropped: what arrived is kept, fsynced
    assert path.read_bytes() == data[:cut]
    again = StagedFile(path, cut)
    assert direct_io(again) == (cut % DIRECT_ALIGN == 0), "a resume from inside a block goes through the page cache"
    append_in_pieces(again, data[cut:])
    again.close()
    assert path.read_bytes() == data
    assert again.sha256() == hashlib.sha256(data).hexdigest()


def test_a_resume_from_the_wrong_offset_is_refused_and_keeps_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob.part"
    path.write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="5000 bytes, not 4096"):
        StagedFile(path, 4096)
    assert path.read_bytes() == b"x" * 5000


def test_without_direct_io_the_same_bytes_go_through_the_page_cache(tmp_path: Path) -> None:
    data = os.urandom(DIRECT_BUFFER + 4321)
    staged = StagedFile(tmp_path / "blob.part", 0, direct=False)
    assert not direct_io(staged)
    append_in_pieces(staged, data)
    staged.close()
    assert (tmp_path / "blob.part").read_bytes() == data
    assert staged.sha256() == hashlib.sha256(data).hexdigest()


def test_a_direct_write_the_filesystem_turns_down_is_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some filesystems accept O_DIRECT when a file is opened and refuse the write itself (EINVAL)."""
    real_write = os.write
    refused = []

    def write(fd: int, data: memoryview) -> int:
        if int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    data = os.urandom(2 * DIRECT_BUFFER + 999)
    staged = StagedFile(tmp_path / "blob.part", 0)
    monkeypatch.setattr("edge.staging.os.write", write)
    append_in_pieces(staged, data)
    assert refused == [DIRECT_BUFFER], "one direct write was refused, and direct I/O was then off"
    assert not direct_io(staged)
    staged.close()
    assert (tmp_path / "blob.part").read_bytes() == data
    assert staged.sha256() == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- straight from a socket


def sender(sock: socket.socket, data: bytes, *, then_close: bool = True) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        if then_close:
            sock.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.mark.parametrize("size", [1, BUFFER - 1, 2 * BUFFER + 9])
async def test_a_body_received_from_a_socket_lands_whole_and_hashed(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    ours, theirs = pair
    data = os.urandom(size)
    staged = StagedFile(tmp_path / "blob.part", 0)
    sender(theirs, data + b"next request", then_close=False)  # bytes after the body stay unread
    await asyncio.to_thread(staged.receive, ours, size, PaceGuard(UploadPace(), "blob"), threading.Event())
    staged.close()
    assert (tmp_path / "blob.part").read_bytes() == data
    assert staged.sha256() == hashlib.sha256(data).hexdigest()
    assert ours.recv(100) == b"next request"


async def test_a_sender_that_closes_early_leaves_what_arrived_for_a_resume(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, theirs = pair
    data = os.urandom(BUFFER + 5000)
    staged = StagedFile(tmp_path / "blob.part", 0)
    sender(theirs, data[: BUFFER + 100])
    with pytest.raises(ConnectionResetError):
        await asyncio.to_thread(staged.receive, ours, len(data), PaceGuard(UploadPace(), "blob"), threading.Event())
    staged.close()
    assert (tmp_path / "blob.part").read_bytes() == data[: BUFFER + 100]


async def test_a_silent_sender_is_cut_off_by_its_pace_and_a_stop_ends_the_wait(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair
    staged = StagedFile(tmp_path / "blob.part", 0)
    guard = PaceGuard(UploadPace(min_rate=1000, window=0.3), "Blob b")
    with pytest.raises(UploadTooSlow, match="below the minimum rate"):
        await asyncio.to_thread(staged.receive, ours, 10_000, guard, threading.Event())
    stop = threading.Event()
    waiting = asyncio.ensure_future(
        asyncio.to_thread(staged.receive, ours, 10_000, PaceGuard(UploadPace(), "blob"), stop)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done(), "no pace rule: it waits for bytes"
    stop.set()
    with pytest.raises(ConnectionAbortedError):
        await asyncio.wait_for(waiting, timeout=10)  # a hang guard: the stop is seen within a second
    staged.close(keep=False)
