"""The client side of docs/transactions.md: one edge, one call at a time, every answer checked.

Shared by the Distribution service (pushing to edges) and by a parent edge (relaying to its
children, docs/tiers.md): both run the same transaction with the same code.

Errors say whether a retry can help: the edge unreachable, timing out or answering 5xx,
408 or 429 (``retryable``), or refusing with another 4xx or answering something that is
not the protocol (permanent, quoting the edge). Every call has a time-out; nothing waits forever.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from aiohttp.payload import Payload

from repository.logs import current_request_id
from wire import protocol
from wire.errors import InvalidInput
from wire.jsonstrict import JsonRefused, loads
from wire.protocol import RECEIVED_BYTES, Removal

MAX_ERROR_TEXT = 300


class Target(Protocol):
    """Where a transaction goes: an edge's name (for messages), base URL and token."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class ManifestSource:
    """A signed manifest to send: its size, its signature, and its bytes read afresh at each call
    of ``chunks`` (a retried start sends them again)."""

    size: int
    signature: str
    chunks: Callable[[], AsyncIterator[bytes]]


class EdgeCallError(Exception):
    """A call to an edge that did not succeed; ``retryable`` says whether trying again can help."""

    retryable = False

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class EdgeUnreachable(EdgeCallError):
    retryable = True


class EdgeServerError(EdgeCallError):
    retryable = True


class EdgeRefused(EdgeCallError):
    """A 4xx: the edge will not do it, and asking again will not change that."""


class EdgeGarbage(EdgeCallError):
    """An answer that is not the protocol's (not JSON, wrong fields)."""


class RangeMismatch(EdgeCallError):
    """416 on a resumed upload: the edge holds ``received`` bytes, so resume from there."""

    retryable = True

    def __init__(self, received: int) -> None:
        super().__init__(f"the edge holds {received} bytes of the blob", 416)
        self.received = received


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


def edge_message(text: str) -> str:
    """The message of an Artifactory-style error body, or the body itself."""
    try:
        body = loads(text)
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            return "; ".join(str(e.get("message", e)) for e in body["errors"] if isinstance(e, dict)) or text
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])
    except JsonRefused:
        pass
    return text.strip() or "no details"


class EdgeClient:
    """Calls to one edge with its token, through a shared session."""

    def __init__(self, session: aiohttp.ClientSession, edge: Target, *, read_timeout: float) -> None:
        self.session = session
        self.edge = edge
        self.headers = {"Authorization": f"Bearer {edge.token}"}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=read_timeout)

    def _what(self, method: str, path: str) -> str:
        return f"edge {self.edge.name} ({method} {path})"

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        expect_json: bool = True,
    ) -> tuple[int, Any, dict[str, str]]:
        """One request; 2xx answers (status, JSON body, headers), anything else raises an EdgeCallError."""
        what = self._what(method, path)
        traced = {"X-Request-ID": request_id} if (request_id := current_request_id.get()) else {}
        try:
            async with self.session.request(
                method,
                self.edge.url + path,
                json=json_body,
                data=data,
                headers={**self.headers, **traced, **(headers or {})},
                timeout=self.timeout,
            ) as resp:
                text = await resp.text(errors="replace") if method != "HEAD" else ""
                answer_headers = dict(resp.headers)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EdgeUnreachable(f"{what}: cannot reach the edge: {type(exc).__name__} {exc}".rstrip()) from None
        if status >= 500 or status in (408, 429):  # 408: an upload the edge found too slow; try again
            raise EdgeServerError(f"{what} answered {status}: {_quote(edge_message(text))}", status)
        if status == 416 and RECEIVED_BYTES in answer_headers:
            raise RangeMismatch(_received(answer_headers, what))
        if status >= 400:
            raise EdgeRefused(f"{what} refused with {status}: {_quote(edge_message(text))}", status)
        if not expect_json or status == 204:
            return status, None, answer_headers
        try:
            return status, loads(text), answer_headers
        except JsonRefused:
            raise EdgeGarbage(f"{what} answered {status} with a body that is not JSON: {_quote(text)!r}") from None

    async def start(self, manifest: ManifestSource) -> dict[str, Any]:
        """Open the transaction: the manifest streams out as the body (wire/protocol.py)."""
        headers = protocol.start_headers(manifest.size, manifest.signature)
        _, body, _ = await self.call("POST", protocol.TRANSACTIONS, data=manifest.chunks(), headers=headers)
        _require(body, {"transaction_id": str, "state": str, "missing": list}, self._what("POST", "start"))
        return body  # type: ignore[no-any-return]

    async def missing(self, tx: str, first: dict[str, Any]) -> AsyncIterator[list[str]]:
        """The blobs the edge is missing, a page at a time: ``first`` (a start or status answer) holds
        the first page, and says where the next starts."""
        page = first
        while True:
            yield page["missing"]
            after = page.get("missing_next")
            if after is None:
                return
            if not isinstance(after, str) or not protocol.SHA256_RE.fullmatch(after):
                raise EdgeGarbage(f"{self._what('GET', 'missing')} answered 'missing_next' {_quote(str(after))!r}")
            path = protocol.missing_path(tx) + "?" + urlencode(protocol.missing_query(after))
            _, page, _ = await self.call("GET", path)
            _require(page, {"missing": list}, self._what("GET", "missing"))

    async def received(self, tx: str, sha256: str) -> int:
        """Bytes of a blob the edge holds in staging (HEAD ``X-Received-Bytes``); 0 when it holds none."""
        path = protocol.blob_path(tx, sha256)
        try:
            _, _, headers = await self.call("HEAD", path, expect_json=False)
        except EdgeRefused as exc:
            if exc.status == 404:
                return 0
            raise
        return _received(headers, self._what("HEAD", path)) if RECEIVED_BYTES in headers else 0

    async def put_blob(
        self, tx: str, sha256: str, size: int, offset: int, body: AsyncIterator[bytes] | Payload
    ) -> None:
        headers = {"Content-Length": str(size - offset), "Content-Type": "application/octet-stream"}
        if offset:
            headers["Content-Range"] = protocol.content_range(offset, size)
        await self.call("PUT", protocol.blob_path(tx, sha256), data=body, headers=headers)

    async def put_batch(self, tx: str, length: int, body: AsyncIterator[bytes]) -> None:
        headers = {"Content-Length": str(length), "Content-Type": "application/octet-stream"}
        await self.call("POST", protocol.batch_path(tx), data=body, headers=headers)

    async def commit(self, tx: str) -> dict[str, Any]:
        _, body, _ = await self.call("POST", protocol.commit_path(tx))
        _require(body, {"state": str}, self._what("POST", "commit"))
        return body  # type: ignore[no-any-return]

    async def status(self, tx: str) -> dict[str, Any]:
        _, body, _ = await self.call("GET", protocol.transaction_path(tx))
        _require(body, {"state": str}, self._what("GET", "transaction status"))
        return body  # type: ignore[no-any-return]

    async def abort(self, tx: str) -> None:
        await self.call("POST", protocol.abort_path(tx))

    async def remove_bundle(self, name: str, version: str) -> Removal | None:
        """One bounded step of a bundle's removal from the edge: how far it got (202), or None once
        the bundle is gone (204; 404: it was not there, or an earlier step finished it)."""
        path = protocol.bundle_path(name, version)
        try:
            status, body, _ = await self.call("DELETE", path)
        except EdgeRefused as exc:
            if exc.status == 404:
                return None
            raise
        if status != 202:
            return None
        try:
            return protocol.parse_removal(body)
        except InvalidInput as exc:
            raise EdgeGarbage(
                f"{self._what('DELETE', path)} answered 202 with {exc}: {_quote(json.dumps(body))}"
            ) from None

    async def bundles(self) -> list[dict[str, Any]]:
        _, body, _ = await self.call("GET", protocol.BUNDLES)
        if not isinstance(body, list):
            raise EdgeGarbage(f"{self._what('GET', 'bundles')} answered something other than a list")
        return body

    async def trust_key(self, alias: str, public_key: str) -> dict[str, Any]:
        _, body, _ = await self.call(
            "POST", protocol.TRUSTED_KEYS, json_body={"alias": alias, "public_key": public_key}
        )
        return body if isinstance(body, dict) else {}


def _received(headers: dict[str, str], what: str) -> int:
    raw = headers.get(RECEIVED_BYTES, "")
    if not raw.isdigit():
        raise EdgeGarbage(f"{what}: {RECEIVED_BYTES} is not a number: {raw[:40]!r}")
    return int(raw)


def _require(body: Any, fields: dict[str, type], what: str) -> None:
    if not isinstance(body, dict):
        raise EdgeGarbage(f"{what} answered {type(body).__name__}, not a JSON object")
    for name, kind in fields.items():
        if not isinstance(body.get(name), kind):
            raise EdgeGarbage(f"{what} answered without '{name}' ({kind.__name__}): {_quote(json.dumps(body))}")
