"""Handlers of relays (docs/tiers.md): the Distribution service asks a parent edge to relay a
transaction it committed to a child, reads how far each relay got, and stops one.

Authenticated like every distributor call (``distributor`` or ``admin`` role). No answer
carries the child's token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from repository.errors import BadRequest, Conflict, NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from wire import protocol
from wire.errors import InvalidPath
from wire.paths import check_repo_key
from wire.protocol import RelayState, TransactionState

from .api import DISTRIBUTORS
from .keys import relayer_key, transactions_key
from .relay_store import Relay
from .relaying import Relayer

TX_ID = "{tx_id:[0-9a-f]{64}}"
CHILD = "{child:[A-Za-z0-9._-]+}"
MAX_FIELD = 4096


def _relayer(request: web.Request) -> Relayer:
    require_role(request, *DISTRIBUTORS)
    return request.app[relayer_key]


def _field(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD or any(ch <= " " for ch in value):
        raise BadRequest(f"'{key}' must be a non-empty string without spaces or control characters")
    return value


def parse_relay(body: dict[str, Any]) -> tuple[str, str, str, str]:
    """(transaction id, child name, child base URL, child token) of a relay request."""
    if set(body) != protocol.RELAY_FIELDS:
        raise BadRequest(f"A relay request has exactly the fields {', '.join(sorted(protocol.RELAY_FIELDS))}")
    tx_id, child, url, token = (_field(body, k) for k in ("transaction_id", "child", "url", "token"))
    if not protocol.SHA256_RE.fullmatch(tx_id):
        raise BadRequest("'transaction_id' must be a transaction's id: 64 lowercase hex digits")
    try:
        check_repo_key(child)
    except InvalidPath:
        raise BadRequest(f"'child' must be an edge name (letters, digits, '.', '_' or '-'), not {child!r}") from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BadRequest(f"'url' must be the child's http(s) base URL, not {url!r}")
    return tx_id, child, url.rstrip("/"), token


async def ask_relay(request: web.Request) -> web.Response:
    """Relay a committed transaction to a child: 202 with the relay (a retry answers the same)."""
    relayer = _relayer(request)
    tx_id, child, url, token = parse_relay(await read_json_object(request))
    tx = await request.app[transactions_key].get(tx_id)  # 404 when this edge never had it
    if tx.state != TransactionState.COMMITTED:
        raise Conflict(f"Transaction {tx_id} is {tx.state.value} on this edge: a parent relays only what it committed")
    relay = await relayer.relays.ask(tx_id, child, url, token, (tx.files, tx.bytes))
    relayer.wake()
    return json_response(relay.public_json(), status=202)


async def _relay(request: web.Request) -> tuple[Relayer, Relay]:
    relayer = _relayer(request)
    tx_id, child = request.match_info["tx_id"], request.match_info["child"]
    relay = await relayer.relays.get(tx_id, child)
    if relay is None:
        raise NotFound(f"No relay of transaction {tx_id} to {child}")
    return relayer, relay


async def relay_status(request: web.Request) -> web.Response:
    return json_response((await _relay(request))[1].public_json())


async def abort_relay(request: web.Request) -> web.Response:
    """Stop a running relay (the Distribution service aborts the child's transaction itself);
    a relay that ended already is answered as it is."""
    relayer, relay = await _relay(request)
    if relay.state == RelayState.RUNNING:
        await relayer.relays.abort(*relay.key)
        relay = await relayer.relays.get(*relay.key) or relay
    return json_response(relay.public_json())


def relay_routes() -> list[web.AbstractRouteDef]:
    return [
        web.post(protocol.RELAYS, ask_relay, name="relay_ask"),
        web.get(protocol.relay_path(TX_ID, CHILD), relay_status, name="relay_status", allow_head=False),
        web.post(protocol.relay_abort_path(TX_ID, CHILD), abort_relay, name="relay_abort"),
    ]
