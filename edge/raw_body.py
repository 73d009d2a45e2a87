"""A blob upload's body read straight from its socket, past aiohttp's parser.

Through aiohttp a body's bytes are copied from the socket into a chunk, copied again by
the HTTP parser, queued, handed to the handler one by one with a task switch each, and
copied once more into the staging buffer; for large blobs that was most of what an
edge spent per byte beyond hashing (bench/distribute.py). Read here, they are received
into the staging buffer in a worker thread, hashed and written from there: one copy,
by the kernel, and no Python per chunk.

The parser is left behind mid-body, so the connection cannot carry another request:
taking the body marks the connection to close after this answer, with
``Connection: close`` on whatever answer goes out (``close_after_raw_body``). Only
plain TCP (no TLS) bodies of a known length and no content coding are taken; every
other upload goes through aiohttp as before.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")

# Smaller bodies are cheap enough through aiohttp and keep their connection for the next request.
RAW_BODY_MIN = 1024 * 1024
# Bodies received straight from their sockets at once, each by a thread of its own for all of
# its length (and with its staging buffer, edge/staging.py); more go through aiohttp meanwhile.
RECEIVER_THREADS = 16


@dataclass
class RawBody:
    """The body of one request: ``buffered``, which aiohttp had read already, then ``remaining``
    bytes still to receive from ``sock``, a duplicate of the connection's socket."""

    sock: socket.socket
    buffered: bytes
    remaining: int

    @classmethod
    def take(cls, request: web.Request) -> RawBody | None:
        """Take the request's body over from aiohttp, or None where it must stay with aiohttp."""
        length = request.content_length
        transport = request.transport
        if (
            length is None
            or length < RAW_BODY_MIN
            or request.headers.get("Content-Encoding", "identity").lower() != "identity"
            or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
            or transport is None
            or transport.is_closing()
            or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("socket") is None
        ):
            return None
        # What aiohttp has read so far; reading it may resume the transport, so pause after.
        buffered = request.content.read_nowait()
        transport.pause_reading()
        fd = transport.get_extra_info("socket").fileno()
        sock = socket.socket(fileno=os.dup(fd))  # the same connection, under a descriptor of our own
        sock.setblocking(False)
        request.protocol.close()  # no further request on this connection: the parser is mid-body
        body = request[RAW_BODY] = cls(sock, buffered, length - len(buffered))
        return body

    @staticmethod
    def release(request: web.Request) -> None:
        """After the answer is decided: the socket is closed, and aiohttp sees the body as ended,
        so it does not wait to read it."""
        body = request.get(RAW_BODY)
        if body is not None:
            body.sock.close()
            request.content.feed_eof()


RAW_BODY = web.RequestKey("raw_body", RawBody)


class Receivers:
    """The threads that receive raw bodies.

    Each raw upload holds a thread until its last byte, so these are not the event loop's
    default executor: its few threads (six on two cores) run every short file operation of
    the node, and four large uploads there left two for everything else, so the small blobs
    arriving beside them queued (bench/distribute.py). When every receiver is busy, a body
    stays with aiohttp, which needs no thread of its own.
    """

    def __init__(self, threads: int = RECEIVER_THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="receive")
        self._free = threads

    def take(self, request: web.Request) -> RawBody | None:
        """The request's raw body, holding a receiver until ``release``; None to leave it with aiohttp."""
        if self._free == 0:
            return None
        body = RawBody.take(request)
        if body is not None:
            self._free -= 1
            request[RECEIVER] = self
        return body

    def release(self, request: web.Request) -> None:
        """After the answer is decided (the receiving thread has stopped): see ``RawBody.release``."""
        if request.get(RAW_BODY) is not None:
            RawBody.release(request)
        if request.pop(RECEIVER, None) is self:
            self._free += 1

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


RECEIVER = web.RequestKey("receiver", Receivers)


def close_after_raw_body(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """From the edge's answer hook (edge/requests.py), as a response is prepared: an answer to a
    request whose body was taken says the connection closes, so the client does not send another
    request on it."""
    if request.get(RAW_BODY) is not None:
        response.force_close()
        response.headers["Connection"] = "close"  # the hook runs after aiohttp wrote its own headers
