"""Thin handlers for the edge's distribution API (docs/transactions.md) and its trusted keys.

Each parses the request, checks the caller's role, calls ``Transactions`` or
``TrustedKeys`` and shapes the answer; errors are mapped by the error middleware.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, RepositoryError
from repository.http import keys as core
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.middlewares import error_body
from repository.http.responses import blob_response, json_response
from repository.tokens import Role
from wire import protocol
from wire.protocol import RECEIVED_BYTES
from wire.timestamps import iso

from .keys import settings_key, transactions_key, trusted_keys_key
from .manifest_body import manifest_body
from .pace import UploadTooSlow
from .raw_body import RawBody
from .receiving import TransactionEnded
from .store import ReceivedBundle, Transaction
from .transactions import Transactions

log = logging.getLogger(__name__)

BODY_CHUNK = 256 * 1024
TRUST_FIELDS = frozenset({"alias", "public_key"})
DISTRIBUTORS = (Role.distributor, Role.admin)


def _transactions(request: web.Request) -> Transactions:
    require_role(request, *DISTRIBUTORS)
    return request.app[transactions_key]


async def _string_fields(request: web.Request, fields: frozenset[str]) -> dict[str, str]:
    """A JSON object body with exactly ``fields``, each a string; anything else is a 400."""
    obj = await read_json_object(request)
    if set(obj) != fields or not all(isinstance(v, str) for v in obj.values()):
        raise BadRequest(f"The body must be a JSON object with exactly the string fields {', '.join(sorted(fields))}")
    return obj


def _transaction_json(tx: Transaction, **extra: Any) -> dict[str, Any]:
    return {
        "transaction_id": tx.id,
        "state": tx.state.value,
        "bundle": {"name": tx.name, "version": tx.version},
        **extra,
    }


# -- transactions ------------------------------------------------------------------


async def _missing_json(
    transactions: Transactions, tx: Transaction, after: str = "", limit: int | None = None
) -> dict[str, Any]:
    """A page of missing blobs and where the next starts; the protocol's page size by default."""
    missing, next_after = await transactions.missing_page(tx, after, limit or protocol.MISSING_PAGE)
    return {"missing": missing, "missing_next": next_after}


async def start_transaction(request: web.Request) -> web.Response:
    """The body is the manifest (or the small JSON form): docs/transactions.md."""
    transactions = _transactions(request)
    async with manifest_body(request, transactions.staging, request.app[settings_key].max_manifest_bytes) as body:
        started = await transactions.start(body.path, body.sha256, body.signature)
    tx = started.transaction
    answer = _transaction_json(tx, **await _missing_json(transactions, tx), expires=iso(tx.expires))
    return json_response(answer, status=201 if started.created else 200)


async def transaction_status(request: web.Request) -> web.Response:
    """An open transaction's first page of missing blobs; a committed one's too (what the store
    lacks now), and what it publishes: the Distribution service's check that the edge holds the
    manifest."""
    transactions = _transactions(request)
    tx = await transactions.get(request.match_info["tx_id"])
    extra = await _missing_json(transactions, tx)
    if tx.state is protocol.TransactionState.COMMITTED:
        published = await transactions.published(tx)
        extra["published"] = {"files": published.files, "bytes": published.bytes, "sha256": published.sha256}
    return json_response(_transaction_json(tx, **extra))


async def missing_blobs(request: web.Request) -> web.Response:
    """A page of the blobs the edge is missing, after ``after`` (wire/protocol.py)."""
    transactions = _transactions(request)
    after, limit = protocol.parse_missing_query(request.query)
    tx = await transactions.get(request.match_info["tx_id"])
    return json_response({"transaction_id": tx.id, **await _missing_json(transactions, tx, after, limit)})


async def blob_received(request: web.Request) -> web.Response:
    """HEAD of a blob: ``X-Received-Bytes`` says where a resumed upload starts."""
    received = await _transactions(request).uploads.received(request.match_info["tx_id"], request.match_info["sha256"])
    return web.Response(status=200, headers={RECEIVED_BYTES: str(received)})


def _content_range(request: web.Request) -> tuple[int, int, int] | None:
    header = request.headers.get("Content-Range")
    return None if header is None else protocol.parse_content_range(header)


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
    """Small blobs back to back in one body (wire/batch.py)."""
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
    """204 once the bundle is gone; 202 with how far the removal got while files are left."""
    removal = await _transactions(request).delete_bundle(request.match_info["name"], request.match_info["version"])
    if removal.done:
        return web.Response(status=204)
    return json_response(protocol.removal_body(removal), status=202)


# -- trusted keys ------------------------------------------------------------------


async def trust_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    fields = await _string_fields(request, TRUST_FIELDS)
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


# -- SBOMs --------------------------------------------------------------------------


async def bundle_sbom(request: web.Request) -> web.StreamResponse:
    """A bundle's CycloneDX SBOM, the bytes its signed manifest names; any signed-in role may read
    it (as on the service), and check it by its ``X-Checksum-Sha256`` against that manifest."""
    require_role(request, *Role)
    transactions = request.app[transactions_key]
    sbom = await transactions.sbom(request.match_info["name"], request.match_info["version"])
    storage = transactions.artifacts.storage
    return await blob_response(request, storage, sbom.sha256, sbom.size, protocol.SBOM_MEDIA_TYPE)
