"""A whole small file answered in one write, its header block serialized once per file.

Small files are most of what production nodes pull in bursts (indexes, configs, scripts), and
for them aiohttp's response building costs more than anything the node decides: a header
multidict copied per response, Content-Length, Date and Server worked out, keep-alive judged,
fifteen headers serialized, then the body joined on. Every header but the last few is the same
for every download of one file, so ``head_block`` serializes them once (with aiohttp's own
serializer, which refuses a CR or LF anywhere) and the catalog keeps the bytes with the file's
cached entry. A response then writes the status line, that block, the Date and Server aiohttp
would have written, what the request's prepare hooks add (the request id, the worker) and the
body, in one ``transport.write``.

Only the plainest exchange takes this way: a 200 with the whole body to an HTTP/1.1 client that
keeps its connection. Anything else (HEAD, ranges, conditions, HTTP/1.0, ``Connection: close``)
is answered by aiohttp's own response, byte for byte as before.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict

_STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
_DATE = b"Date: "
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()


def head_block(headers: CIMultiDict[str], size: int) -> bytes:
    """The header lines (each ending in CRLF) every whole-file 200 of this file starts with."""
    lines = _serialize_headers("", headers)  # "\r\n", then the lines, then the blank line's "\r\n"
    return lines[2:-2] + b"Content-Length: %d\r\n" % size


def sendable_in_one_write(request: web.BaseRequest) -> bool:
    """Whether the exchange is the plain one ``OneWriteResponse`` answers exactly as aiohttp would."""
    return request.version == HttpVersion11 and request.keep_alive


class OneWriteResponse(web.StreamResponse):
    """A 200 carrying ``body`` whole, after the header lines of ``head`` (see ``head_block``).

    It is a ``StreamResponse`` to everything around it: prepare hooks (and ``on_response_prepare``
    receivers) see it and may add headers, the body bytes are reported to the writer's
    ``on_body_write`` hook, and ``body_length`` counts what went out, as aiohttp counts it.
    """

    def __init__(self, head: bytes, body: bytes) -> None:
        super().__init__()
        self._head = head
        self._body_bytes = body

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        writer = self._payload_writer = request.writer
        self._req = request
        self._keep_alive = True
        await request._prepare_hook(self)
        added = self._headers
        # aiohttp's Date and Server, unless a hook chose its own (which aiohttp would keep)
        date = b"" if hdrs.DATE in added else _DATE + rfc822_formatted_time().encode() + b"\r\n"
        server = b"" if hdrs.SERVER in added else _SERVER
        lines = _serialize_headers("", added)  # "\r\n", the hooks' lines, "\r\n"
        body = self._body_bytes
        data = b"".join((_STATUS_LINE, self._head, date, server, lines[2:], body))
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)
        writer.output_size += len(data)
        if body and (notify := writer.on_body_write) is not None:
            notify(len(body), writer.output_size)
        self._eof_sent = True
        self._body_length = writer.output_size
        self._req = None
        self._payload_writer = None
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        """Sent whole by ``prepare``: nothing is left to write."""
