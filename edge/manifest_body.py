"""The body of a transaction start, taken to a file in staging as it arrives (wire/protocol.py).

A manifest of 100,000 files is some 30 MB: held as text, then bytes, then decoded objects,
it cost an edge hundreds of MB. Streamed to a file, hashed on the way, its signature is
checked where it lies and it is read back a page at a time (``Transactions.start``).
The small form, a JSON object with the manifest as a string, lands in the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from repository.errors import BadRequest, PayloadTooLarge, RepositoryError
from repository.http.json_body import read_json_object
from storage_backends import open_in_thread, os_storage_error
from wire import protocol

from .staging import Staging

BODY_CHUNK = 256 * 1024


class LengthRequired(RepositoryError):
    status = 411
    default_message = "A manifest body needs a Content-Length"


@dataclass(frozen=True)
class ManifestBody:
    path: Path  # the manifest's bytes
    sha256: str  # of those bytes: the transaction's id
    signature: str


@contextlib.asynccontextmanager
async def manifest_body(request: web.Request, staging: Staging, limit: int) -> AsyncIterator[ManifestBody]:
    """The start request's manifest in a file of its own for the block's life, refused with a 4xx
    (and nothing kept) when it is not one: 411 without a length, 413 over ``limit`` bytes, 400 for
    a body cut short or a missing or malformed signature, or a body of another media type that is
    not the JSON object form."""
    path = await staging.scratch()
    try:
        try:
            signature, sha256 = await _receive(path, request, limit)
        except OSError as exc:
            if isinstance(exc, ConnectionError):
                raise
            raise os_storage_error(exc, "writing the manifest to staging failed") from None  # full: a 507
        yield ManifestBody(path, sha256, signature)
    finally:
        await asyncio.to_thread(path.unlink, True)


async def _receive(path: Path, request: web.Request, limit: int) -> tuple[str, str]:
    """The signature, and the sha256 of the manifest written to ``path``."""
    if request.content_type == protocol.MANIFEST_MEDIA_TYPE:
        signature = protocol.signature_from_header(request.headers.get(protocol.SIGNATURE_HEADER))
        return signature, await _stream_to(path, request, limit)
    # the small form, whatever it is labelled (as curl and scripts send it)
    obj = await read_json_object(request, limit=limit)
    if set(obj) != protocol.START_FIELDS or not all(isinstance(v, str) for v in obj.values()):
        fields = ", ".join(sorted(protocol.START_FIELDS))
        raise BadRequest(f"The body must be a JSON object with exactly the string fields {fields}")
    try:
        data = obj.pop("manifest").encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("Invalid manifest: not encodable as UTF-8") from None
    await asyncio.to_thread(path.write_bytes, data)
    return obj["signature"], hashlib.sha256(data).hexdigest()


async def _stream_to(path: Path, request: web.Request, limit: int) -> str:
    """Write the body to ``path``, hashing it; the sha256 of exactly Content-Length bytes."""
    declared = request.content_length
    if declared is None:
        raise LengthRequired()
    if declared > limit:
        raise PayloadTooLarge(f"Release bundle manifest of {declared} bytes is larger than {limit} bytes")
    digest, received = hashlib.sha256(), 0
    with await open_in_thread(open, path, "wb") as out:
        try:
            async for chunk in request.content.iter_chunked(BODY_CHUNK):
                received += len(chunk)
                if received > declared:  # a compressed body inflating past its length: stop here
                    raise BadRequest(f"The manifest body is longer than its Content-Length of {declared} bytes")
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        except ConnectionError:
            pass  # counted short below
    if received != declared:
        raise BadRequest(f"The manifest body ended after {received} of its {declared} bytes")
    return digest.hexdigest()
