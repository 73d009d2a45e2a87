"""Time limits on a connection's reads, and JSON answers to requests that cannot be parsed.

aiohttp closes a connection that stays idle between requests (``keepalive_timeout``), but
a client that sends half a request line or half its headers, or a body that stops
arriving, holds the connection, and a handler waiting for that body, for as long as it
likes: a few thousand such sockets (slowloris) are enough to starve a node that is not
behind nginx. ``GuardedRequestHandler`` adds the two limits nginx has:

- ``header_timeout``: a connection must deliver a whole request line and headers within
  this time of connecting, or of the first byte of a later request; otherwise it is closed.
- ``body_timeout``: while a request's body is being waited for, it may go this long
  without a byte; then reading it fails with a 408 (``RequestTimeout``), answered as JSON,
  and the connection is closed. Time during which the server itself stopped reading (a
  full buffer, a body received past aiohttp) does not count.

A request whose line or headers are too long, too many, or malformed gets a JSON 4xx in
the service's error shape (414 for the line, 431 for headers, else 400) that never quotes
the request's bytes, where aiohttp would answer ``text/plain`` with the offending bytes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from repository.errors import RequestTimeout

from .middlewares import error_body
from .responses import json_response

log = logging.getLogger(__name__)

# Enough of a request's first bytes to see its method and the start of its target, which
# decides the shape of an error answered before the request could be parsed.
HEAD_SNIFF = 64


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_line_size: int = 8190  # bytes of a request target
    max_field_size: int = 8190  # bytes of a header's name, and of its value
    max_headers: int = 128

    def handler_args(self) -> dict[str, Any]:
        """What aiohttp's request handler takes itself."""
        return {
            "keepalive_timeout": self.keepalive_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with read time limits and JSON parse errors."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body being waited for
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._head = b""  # the first bytes of the latest request head (a copy of at most HEAD_SNIFF)
        self._head_ended = False  # whether the head has ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is a slow head too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        idle = self._request_count == 0 or self._idle()  # bytes of a request head, not of a body
        if idle:  # keep the first bytes of the head being received, for ``handle_error``
            head = self._head
            if self._head_ended:  # the previous request's head: this is the next one's
                self._head, self._head_ended = data[:HEAD_SNIFF], False
            elif len(head) < HEAD_SNIFF:
                self._head = head + data[: HEAD_SNIFF - len(head)]
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a whole head arrived (or one that cannot be parsed)
            self._head_done()
        elif idle and data and self._head_timer is None:
            self._arm_head_timer()

    def _idle(self) -> bool:
        """Waiting for the next request (not handling one, nor reading what is left of one).
        Before the first request, this becomes true only once the connection's task has run."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._idle():
            log.debug("closing a connection from %s: no whole request head within its time", self.peername)
            self.force_close()

    def _head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_ended = True
        payload = self._messages[-1][1] if self._messages else None
        if payload is not None and not payload.is_eof():
            self._body = payload
            self._arm_body_timer(self._last_read + self._limits.body_timeout)

    def _arm_body_timer(self, when: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self._loop.call_at(when, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        body, transport = self._body, self.transport
        if body is None or transport is None or body.is_eof() or body.exception() is not None:
            self._body = None
            return
        now = self._loop.time()
        if not transport.is_reading():  # the server is not reading: the client is not late
            self._last_read = now
        elif now - self._last_read >= self._limits.body_timeout:
            self._body = None
            body.set_exception(
                RequestTimeout(f"The request body stopped arriving: no byte for {self._limits.body_timeout:g} s")
            )
            return
        self._arm_body_timer(self._last_read + self._limits.body_timeout)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's last resort (a request it could not parse, or an error past every
        middleware), answered as JSON in the service's error shape."""
        if isinstance(exc, HttpProcessingError) and status < 500:
            status, text = self._parse_error(exc)
            path = self._sniffed_path()
            log.debug("refused an unparsable request from %s: %s", request.remote, text)  # the access log has it
        else:
            if request.writer.output_size > 0:  # a response was under way: only closing is left
                raise ConnectionError("the response had started; the connection is closed")
            path = request.path
            text = "Request timed out" if status == 504 else "Internal server error"
            log.error("error handling %s %s", request.method, path, exc_info=exc)
        response = json_response(error_body(path, status, text), status=status)
        response.force_close()
        return response

    def _parse_error(self, exc: HttpProcessingError) -> tuple[int, str]:
        if isinstance(exc, LineTooLong):
            if self._target_too_long(exc):
                return 414, f"Request line too long: the target may have at most {self.max_line_size} bytes"
            return 431, f"Request header field too large: at most {self.max_field_size} bytes each"
        if "too many headers" in exc.message.lower():
            return 431, f"Too many request header fields: at most {self.max_headers}"
        return 400, "Malformed HTTP request"

    def _sniffed_target(self) -> bytes:
        """The start of the unparsable request's target, as far as it was kept."""
        parts = self._head.split(b" ", 2)
        return parts[1] if len(parts) > 1 else b""

    def _sniffed_path(self) -> str:
        return self._sniffed_target().decode("latin-1") or "/"

    def _target_too_long(self, exc: LineTooLong) -> bool:
        """Whether the line too long is the target (else a header): the parser gives the start
        of the line it refused, which is then the start of the request's target."""
        refused, target = exc.args[0] if exc.args else b"", self._sniffed_target()
        n = min(len(target), 32)
        return isinstance(refused, bytes | bytearray) and n > 0 and bytes(refused[:n]) == target[:n]


class GuardedServer(web.Server):
    """aiohttp's connection factory, making ``GuardedRequestHandler``s."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are guarded by ``limits``."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs, **limits.handler_args())
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up and freezes it
        return GuardedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )
