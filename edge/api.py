"""Thin handlers for the edge's distribution API (docs/transactions.md) and its trusted keys.

Each parses the request, checks the caller's role, calls ``Transactions`` or
``TrustedKeys`` and shapes the answer; errors are mapped by the error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, PayloadTooLarge, RepositoryError
from repository.http import keys as core
from repository.http.auth import require_role
from repository.http.middlewares import error_body
from repository.http.responses import json_response
from repository.http.storage_api import iso
from repository.tokens import Role

from .keys import settings_key, transactions_key, trusted_keys_key
from .pace import UploadTooSlow
from .raw_body import RawBody
from .receiving import TransactionEnded
from .store import ReceivedBundle, State, Transaction
from .transactions import Transactions

log = logging.getLogger(__name__)

BODY_CHUNK = 256 * 1024
START_FIELDS = frozenset({"manifest", "signature"})
CONTENT_RANGE_RE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
DISTRIBUTORS = (Role.distributor, Role.admin)


def _transactions(request: web.Request) -> Transactions:
    require_role(request, *DISTRIBUTORS)
    return request.app[transactions_key]


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _json_object(body: bytes, fields: frozenset[str]) -> dict[str, str]:
    """A JSON object with exactly ``fields``, each a string; anything else is a 400."""
    try:
        obj = json.loads(body, object_pairs_hook=_refuse_duplicates)
    except (ValueError, RecursionError):
        raise BadRequest("The body must be a JSON object without duplicate keys") from None
    if not isinstance(obj, dict) or set(obj) != fields or not all(isinstance(v, str) for v in obj.values()):
        raise BadRequest(f"The body must be a JSON object with exactly the string fields {', '.join(sorted(fields))}")
    return obj


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _transaction_json(tx: Transaction, **extra: Any) -> dict[str, Any]:
    return {
        "transaction_id": tx.id,
        "state": tx.state.value,
        "bundle": {"name": tx.name, "version": tx.version},
        **extra,
    }


# -- transactions ------------------------------------------------------------------


async def start_transaction(request: web.Request) -> web.Response:
    transactions = _transactions(request)
    body = await _read_bounded(request, request.app[settings_key].max_manifest_bytes)
    fields = await asyncio.to_thread(_json_object, body, START_FIELDS)
    started = await transactions.start(fields["manifest"], fields["signature"])
    tx = started.transaction
    answer = _transaction_json(tx, missing=started.missing, expires=iso(tx.expires))
    return json_response(answer, status=201 if started.created else 200)


async def transaction_status(request: web.Request) -> web.Response:
    """An open transaction's missing blobs; a committed one's too (what the store lacks now),
    and what it publishes: the Distribution service's check that the edge holds the manifest."""
    transactions = _transactions(request)
    tx = await transactions.get(request.match_info["tx_id"])
    if tx.state is State.COMMITTED:
        published = await transactions.published(tx)
        missing = await transactions.missing(tx.id, stored=True)
        extra = {"published": {"files": published.files, "bytes": published.bytes, "sha256": published.sha256}}
        return json_response(_transaction_json(tx, missing=missing, **extra))
    missing = await transactions.missing(tx.id) if tx.state is State.OPEN else []
    return json_response(_transaction_json(tx, missing=missing))


async def blob_received(request: web.Request) -> web.Response:
    """HEAD of a blob: ``X-Received-Bytes`` says where a resumed upload starts."""
    received = await _transactions(request).uploads.received(request.match_info["tx_id"], request.match_info["sha256"])
    return web.Response(status=200, headers={"X-Received-Bytes": str(received)})


def _content_range(request: web.Request) -> tuple[int, int, int] | None:
    header = request.headers.get("Content-Range")
    if header is None:
        return None
    match = CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise BadRequest("Content-Range must be 'bytes first-last/size'")
    first, last, total = (int(g) for g in match.groups())
    return first, last, total


def upload_body(request: web.Request) -> Callable[[], AsyncIterator[bytes] | RawBody]:
    """The body of a blob upload, taken only once the upload is about to read it: refused before
    that (a wrong offset, a closed transaction), it stays with aiohttp, which reads and drops it
    so the sender can read the answer, and the connection stays open."""
    receivers = _transactions(request).receivers
    return lambda: receivers.take(request) or request.content.iter_chunked(BODY_CHUNK)


async def upload_blob(request: web.Request) -> web.StreamResponse:
    transactions = _transactions(request)
    tx_id, sha256 = request.match_info["tx_id"], request.match_info["sha256"]
    try:
        received = await transactions.uploads.upload(
            tx_id,
            sha256,
            upload_body(request),
            content_range=_content_range(request),
            declared=request.content_length,
            interrupt=request.content.set_exception,
        )
    except (UploadTooSlow, TransactionEnded) as exc:
        return await _answer_and_close(request, exc)
    except ConnectionError as exc:
        return _sender_gone(request, f"upload of blob {sha256} to transaction {tx_id}", exc)
    finally:
        transactions.receivers.release(request)
    answer = {"sha256": received.sha256, "size": received.size, "received": received.size}
    return json_response(answer, status=201 if received.created else 200)


async def upload_blob_batch(request: web.Request) -> web.StreamResponse:
    """Small blobs back to back in one body (edge/batch.py)."""
    tx_id = request.match_info["tx_id"]
    try:
        batch = await _transactions(request).uploads.upload_batch(
            tx_id,
            request.content.iter_any(),
            declared=request.content_length,
            interrupt=request.content.set_exception,
        )
    except (UploadTooSlow, TransactionEnded) as exc:
        return await _answer_and_close(request, exc)
    except ConnectionError as exc:
        return _sender_gone(request, f"blob batch for transaction {tx_id}", exc)
    return json_response({"blobs": batch.blobs, "size": batch.size})


async def _answer_and_close(request: web.Request, exc: RepositoryError) -> web.StreamResponse:
    """Send the error, then close the connection: the rest of a body that came too slowly, or
    that the transaction's end cut off, is not read (aiohttp would otherwise linger, reading it,
    before closing)."""
    resp = json_response(error_body(request.path, exc.status, exc.message), status=exc.status)
    resp.force_close()
    with contextlib.suppress(ConnectionError):  # the sender may be gone already
        await resp.prepare(request)
        await resp.write_eof()
    request.protocol.force_close()  # the transport flushes the answer, then closes
    return resp


def _sender_gone(request: web.Request, what: str, exc: ConnectionError) -> web.StreamResponse:
    """A sender that went away mid-body: an ordinary event, one line in the log (what arrived of a
    single blob is kept for a resume). The answer goes nowhere; it is there for the access log."""
    log.info("%s cut off: the sender went away (%s)", what, exc or type(exc).__name__)
    request.protocol.force_close()
    message = "The upload ended before its Content-Length: the sender went away"
    return json_response(error_body(request.path, 400, message), status=400)


async def commit_transaction(request: web.Request) -> web.Response:
    transactions = _transactions(request)
    tx = await transactions.commit(request.match_info["tx_id"], request[core.principal].subject)
    return json_response({"transaction_id": tx.id, "state": tx.state.value, "files": tx.files, "bytes": tx.bytes})


async def abort_transaction(request: web.Request) -> web.Response:
    tx_id = request.match_info["tx_id"]
    await _transactions(request).abort(tx_id)
    return json_response({"transaction_id": tx_id, "state": "ABORTED"})


# -- bundles -----------------------------------------------------------------------


def _bundle_json(bundle: ReceivedBundle) -> dict[str, Any]:
    return {
        "name": bundle.name,
        "version": bundle.version,
        "manifest_sha256": bundle.manifest_sha256,
        "committed": iso(bundle.committed),
        "files": bundle.files,
        "bytes": bundle.bytes,
    }


async def list_bundles(request: web.Request) -> web.Response:
    return json_response([_bundle_json(b) for b in await _transactions(request).bundles()])


async def delete_bundle(request: web.Request) -> web.Response:
    await _transactions(request).delete_bundle(request.match_info["name"], request.match_info["version"])
    return web.Response(status=204)


# -- trusted keys ------------------------------------------------------------------


async def trust_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    fields = _json_object(await request.read(), frozenset({"alias", "public_key"}))
    trusted = await request.app[trusted_keys_key].trust(fields["alias"], fields["public_key"])
    answer = {"alias": trusted.key.alias, "fingerprint": trusted.key.fingerprint}
    return json_response(answer, status=201 if trusted.created else 200)


async def list_trusted_keys(request: web.Request) -> web.Response:
    require_role(request, *DISTRIBUTORS)
    keys = await request.app[trusted_keys_key].list()
    return json_response(
        {"keys": [{"alias": k.alias, "fingerprint": k.fingerprint, "created": iso(k.created)} for k in keys]}
    )


async def remove_trusted_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await request.app[trusted_keys_key].remove(request.match_info["alias"])
    return web.Response(status=204)
