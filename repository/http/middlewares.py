"""The request pipeline shared by both services: errors mapped once, then identity.

The edge's access rules (client address, IP and geo rules, audit) join this pipeline in
the order DESIGN.md gives; its access step calls ``identify`` itself, one layer fewer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from repository.identity import Authenticator
from repository.tokens import ANONYMOUS, Principal
from storage_backends import InvalidDigest, StorageError, StorageFull
from wire.errors import WireError

from . import keys
from .responses import json_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


DISTRIBUTION_PREFIX = "/distribution/"


def error_body(path: str, status: int, message: str) -> dict[str, object]:
    """Artifactory's ``{"errors":[...]}`` everywhere, except Distribution's flat shape under its prefix."""
    if path.startswith(DISTRIBUTION_PREFIX):
        return {"status_code": status, "message": message}
    return {"errors": [{"status": status, "message": message}]}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error body (see ``error_body``) with its real status."""
    try:
        return await handler(request)
    except Exception as exc:
        response = error_response(request, exc)
        if response is None:
            raise
        return response


def error_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON error answer for a failure of ``request``; None for what must travel on as it is
    (redirects, a client gone, a time-out). Shared by ``error_middleware`` and the edge's one
    middleware layer, so the mapping is written once."""

    def answer(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(error_body(request.path, status, message), status=status, headers=headers)

    if isinstance(exc, WireError):  # the repository's errors and the wire contract's
        return answer(exc.status, exc.message, exc.headers)
    if isinstance(exc, InvalidDigest):
        return answer(400, "Invalid checksum")
    if isinstance(exc, StorageFull):
        log.error("storage full on %s %s: %s", request.method, request.path, exc)
        return answer(507, "Insufficient storage: the node is out of disk space")
    if isinstance(exc, StorageError):
        log.error("storage failure on %s %s: %s", request.method, request.path, exc)
        return answer(503, "Storage is unavailable, retry later")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        headers = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        return answer(exc.status, exc.reason, headers)
    if isinstance(exc, ConnectionResetError | TimeoutError):
        return None
    log.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return answer(500, "Internal server error")


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (checking := identify(request)) is not None:
        await checking
    return await handler(request)


def identify(request: web.Request) -> Awaitable[None] | None:
    """Who is calling (the last step before the handler; the edge's access step ends with it, one
    middleware layer fewer). A credential presented is checked even beside a valid signed URL (a
    step before may have made the request the URL's reader): a bad one is a 401 either way,
    and a good one is the caller, whom the URL still lets read its file.

    An anonymous caller (most downloads) is settled at once and the answer is None, with no
    coroutine to pay for; a credential presented answers the check to await."""
    authenticator, headers = request.app[keys.authenticator], request.headers
    if authenticator.presents_nothing(headers):
        _settle(request, ANONYMOUS)
        return None
    return _check_credential(request, authenticator, headers)


async def _check_credential(request: web.Request, authenticator: Authenticator, headers: Mapping[str, str]) -> None:
    _settle(request, await authenticator.identify(headers))


def _settle(request: web.Request, identified: Principal) -> None:
    if identified.authenticated or keys.principal not in request:
        request[keys.principal] = identified
