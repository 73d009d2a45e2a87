"""Request ids: one per request, answered as ``X-Request-ID`` and written on every log line.

An ``X-Request-ID`` the client (or a proxy in front, such as nginx's ``$request_id``)
sends is kept when it is sane: 1 to 128 characters of letters, digits and ``._:-``.
Anything else is replaced by a fresh one, 128 random bits in 32 hex digits (the shape of
a uuid4 in hex), so a log line never carries a client's control characters or megabytes of
header. The id is only for correlating lines and nothing trusts it, so its bits come from
``random`` (no system call, which would also hand the GIL to another thread mid-request)
rather than from the kernel, and drawn ``BATCH`` ids at a time (one draw, formatted and split
in C, costs a request less than formatting its own 128 bits would). ``random`` is reseeded in a
forked child and the ids drawn before the fork are dropped there, so workers forked from one
process never answer the same id.

The id is given first of all (``begin_request``, called by the Distribution service's
``metrics_middleware`` and by the edge's one middleware layer, edge/pipeline.py), so the
refusals and errors of every later step carry the id too. The header is added when a response
is prepared (``on_response_prepare``; on an edge, its request class's answer hook,
edge/requests.py), which is also when aiohttp sends redirects and errors raised past the
middlewares.
"""

from __future__ import annotations

import os
import random
import re
from contextvars import Token

from aiohttp import web
from multidict import istr

from repository.logs import current_request_id

from . import keys

HEADER = "X-Request-ID"
_HEADER = istr(HEADER)  # a case-insensitive key the headers' lookup need not fold again
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}").fullmatch
BATCH = 64  # fresh ids drawn at once


def request_id_of(header: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    if header is not None and _SANE(header):
        return header
    return fresh_id()


def fresh_id() -> str:
    """128 random bits in 32 hex digits."""
    while True:
        try:
            return _drawn.pop()
        except IndexError:  # all used (another thread may have taken the last one meanwhile)
            _draw()


def _draw() -> None:
    _drawn.extend(random.randbytes(16 * BATCH).hex(" ", 16).split())  # split in C, not by slicing


_drawn: list[str] = []
os.register_at_fork(after_in_child=_drawn.clear)


def begin_request(request: web.Request) -> Token[str | None]:
    """Give the request its id, also for the log lines of its task; reset the token when it ends."""
    request_id = request[keys.request_id] = request_id_of(request.headers.get(_HEADER))
    return current_request_id.set(request_id)


def name_answer(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Every response names its request, errors and redirects included (as it is prepared)."""
    request_id = request.get(keys.request_id)
    if request_id is not None:
        response.headers[_HEADER] = request_id


async def answer_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    name_answer(request, response)


def setup_request_ids(app: web.Application) -> None:
    """Answer the id on every response, for a service with no ``on_response_prepare`` hook of its own."""
    app.on_response_prepare.append(answer_request_id)
