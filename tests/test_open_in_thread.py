"""A file opened in a worker thread for a task that was cancelled meanwhile is closed, not leaked
(the unclosed-file warning CI caught when a failed job cancelled an upload that was opening its blob)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import IO, Any

from storage_backends import open_in_thread


async def test_a_file_opened_for_a_cancelled_caller_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x")
    entered, release = threading.Event(), threading.Event()
    opened: list[IO[Any]] = []

    def slow_open(p: Path) -> IO[Any]:
        entered.set()
        release.wait(timeout=30)  # a hang guard only
        f = open(p, "rb")  # noqa: SIM115 - handed to the caller, which closes it
        opened.append(f)
        return f

    caller = asyncio.ensure_future(open_in_thread(slow_open, path))
    await asyncio.to_thread(entered.wait, 30)
    caller.cancel()
    await asyncio.sleep(0)
    assert caller.cancelled()
    release.set()
    for _ in range(3000):  # the thread hands the file over, then it is closed (a hang guard only)
        if opened and opened[0].closed:
            break
        await asyncio.sleep(0.01)
    assert opened and opened[0].closed


async def test_an_uncancelled_caller_gets_the_open_file_and_errors_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"bytes")
    with await open_in_thread(open, path, "rb") as f:
        assert f.read() == b"bytes" and not f.closed
    try:
        await open_in_thread(open, tmp_path / "absent", "rb")
    except FileNotFoundError as exc:
        assert exc.filename == str(tmp_path / "absent")
    else:
        raise AssertionError("opening an absent file raised nothing")
