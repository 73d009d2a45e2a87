"""Request bodies sent with sendfile(2): a large blob goes from the page cache to the socket.

The service pushes every large blob once per edge. Streamed through Python, each copy is
read into memory a megabyte at a time and written again, which made the service the
busiest process of a distribution (bench/distribute.py); with sendfile the kernel hands
the file's cached pages to the socket and the service does no per-byte work at all.

Only for blobs with a local path (the local backend); S3 blobs stream as before. Over
TLS, asyncio's ``loop.sendfile`` falls back to reading and writing by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from aiohttp import ClientConnectionResetError
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from repository.sendfile import send_file
from storage_backends import StorageError

# Bytes per sendfile call: the progress counters move at least this often.
SLICE = 8 * 1024 * 1024


class FileWindow(Payload):
    """``count`` bytes of an open file from ``offset``, as a request body.

    aiohttp writes the request's headers and then asks the payload to write itself: the
    headers are flushed, then the bytes go by sendfile(2) (``send_file``) on the connection's own
    transport, in slices, telling ``on_bytes`` of each. The caller owns and closes the file.
    """

    def __init__(self, file: BinaryIO, offset: int, count: int, on_bytes: Callable[[int], None]) -> None:
        super().__init__(file, content_type="application/octet-stream")
        self._offset = offset
        self._count = count
        self._size = count
        self._on_bytes = on_bytes

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file window is bytes for sendfile, not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        count = self._count if content_length is None else min(self._count, content_length)
        writer.send_headers()
        await writer.drain()
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("the connection closed before the body was sent")
        offset, end = self._offset, self._offset + count
        while offset < end:
            sent = await send_file(transport, self._value, offset, min(SLICE, end - offset))  # type: ignore[arg-type]
            if sent == 0:
                raise StorageError("blob shorter than its recorded size")
            offset += sent
            self._on_bytes(sent)
