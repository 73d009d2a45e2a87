"""Request ids: one per request, answered as ``X-Request-ID`` and written on every log line.

An ``X-Request-ID`` the client (or a proxy in front, such as nginx's ``$request_id``)
sends is kept when it is sane: 1 to 128 characters of letters, digits and ``._:-``.
Anything else is replaced by a fresh one, 128 random bits in 32 hex digits (the shape of
a uuid4 in hex), so a log line never carries a client's control characters or megabytes of
header. The id is only for correlating lines and nothing trusts it, so its bits come from
``random`` (no system call, which would also hand the GIL to another thread mid-request)
rather than from the kernel.

The middleware runs outermost, so the refusals and errors of every later step carry
the id too. The header is added when a response is prepared (``on_response_prepare``),
which is also when aiohttp sends redirects and errors raised past the middlewares.
"""

from __future__ import annotations

import random
import re

from aiohttp import web

from repository.logs import current_request_id

from . import keys
from .middlewares import Handler

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(header: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return f"{random.getrandbits(128):032x}"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[keys.request_id] = request_id_of(request.headers.get(HEADER))
    token = current_request_id.set(request_id)
    try:
        return await handler(request)
    finally:
        current_request_id.reset(token)


async def answer_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response names its request, errors and redirects included."""
    request_id = request.get(keys.request_id)
    if request_id is not None:
        response.headers[HEADER] = request_id


def setup_request_ids(app: web.Application) -> None:
    """Answer the id on every response; the middleware goes first in the app's list."""
    app.on_response_prepare.append(answer_request_id)
