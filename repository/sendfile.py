"""sendfile(2) on a connection's transport, whichever event loop runs it.

asyncio's own loop sends a file with ``loop.sendfile``. uvloop has no ``sendfile``
(it raises NotImplementedError before sending anything): there the file goes out by
``os.sendfile`` on a duplicate of the connection's socket. The duplicate keeps the socket
open until the file is sent, so the bytes can never land on another connection that
reused a closed descriptor's number. Either way the kernel copies the bytes, not Python.
"""

from __future__ import annotations

import asyncio
import os
from typing import IO

# Waits (after the first) for what the transport still buffers before the file's bytes.
BUFFER_POLL_SECONDS = 0.001


async def send_file(transport: asyncio.Transport, file: IO[bytes], offset: int, count: int) -> int:
    """Send ``count`` bytes of ``file`` from ``offset``; answers how many went (fewer at the
    file's end). The file position ends after the last byte sent, also when the connection
    fails part way, so a caller can tell how far it got."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.sendfile(transport, file, offset, count)
    except NotImplementedError:  # uvloop
        return await _send_by_duplicate(loop, transport, file, offset, count)


async def _send_by_duplicate(
    loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, file: IO[bytes], offset: int, count: int
) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        raise ConnectionResetError("the connection closed before the file was sent")
    pause = 0.0  # uvloop sends what was written (the headers) at the end of the loop's turn:
    while transport.get_write_buffer_size():  # one turn is enough unless the socket is full
        if transport.is_closing():
            raise ConnectionResetError("the connection closed before the file was sent")
        await asyncio.sleep(pause)
        pause = BUFFER_POLL_SECONDS
    fd = os.dup(sock.fileno())
    sent = 0
    try:
        while sent < count:
            try:
                n = os.sendfile(fd, file.fileno(), offset + sent, count - sent)
            except BlockingIOError:
                await _writable(loop, fd)
                continue
            if n == 0:  # the file ended
                break
            sent += n
        return sent
    finally:
        os.close(fd)
        file.seek(offset + sent)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until the socket can take more. The duplicate has a descriptor of its own, which the
    loop watches (it refuses to watch a transport's own descriptor for writing)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
