"""JSON answers end with a newline, so a shell prompt after ``curl`` starts on its own line;
a whole blob streamed from the store with its sha256."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from aiohttp import web

from repository.errors import NotFound
from storage_backends import BlobNotFound
from storage_backends.base import StorageBackend


def _dumps(data: Any) -> str:
    return json.dumps(data) + "\n"


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


async def blob_response(
    request: web.Request,
    storage: StorageBackend,
    sha256: str,
    size: int,
    content_type: str,
    *,
    attachment: str | None = None,
) -> web.StreamResponse:
    """The whole blob, streamed (never held), with ``X-Checksum-Sha256`` to check it by; a blob
    the store lacks (lost, or quarantined by the scrub) is a 404 before the first byte goes out.
    With ``attachment`` (a file name) a browser saves it under that name instead of showing it."""
    try:
        chunks = await storage.read(sha256, 0, size)
    except BlobNotFound:
        raise NotFound(f"The blob {sha256} is not in this node's store") from None
    async with aclosing(chunks):
        headers = {"Content-Type": content_type, "X-Checksum-Sha256": sha256}
        if attachment is not None:
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(attachment, safe='')}"
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response
