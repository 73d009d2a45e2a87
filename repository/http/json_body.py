"""JSON request bodies: read with a size limit, parsed by the wire contract's strict parser.

Every JSON body either service accepts comes through here, so every endpoint refuses
the same things the same way: a body over its limit (413), text in an unknown charset,
and anything ``wire.jsonstrict`` refuses, duplicate keys and ``NaN`` included (400,
saying where).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, PayloadTooLarge
from wire.jsonstrict import JsonRefused, loads

BODY_CHUNK = 256 * 1024
# Larger bodies are parsed in a worker thread: a manifest of many thousand files takes a while.
PARSE_IN_THREAD = 256 * 1024
UTF8_NAMES = frozenset({"utf-8", "utf8"})


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _parse(data: bytes, charset: str | None) -> Any:
    text: bytes | str = data
    if charset is not None and charset.lower() not in UTF8_NAMES:
        try:
            text = data.decode(charset)
        except LookupError:
            raise BadRequest(f"Unknown charset {charset!r} in Content-Type") from None
        except UnicodeDecodeError:
            raise BadRequest(f"Request body is not valid {charset}") from None
    try:
        return loads(text)
    except JsonRefused as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.problem}") from None


async def read_json(request: web.Request, *, limit: int | None = None) -> Any:
    """The body as strict JSON. Without ``limit`` the app's ``client_max_size`` bounds it."""
    data = await request.read() if limit is None else await read_bounded(request, limit)
    if len(data) > PARSE_IN_THREAD:
        return await asyncio.to_thread(_parse, data, request.charset)
    return _parse(data, request.charset)


async def read_json_object(request: web.Request, *, limit: int | None = None) -> dict[str, Any]:
    """A JSON object body, or a 400 that says what is wrong with it."""
    body = await read_json(request, limit=limit)
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
