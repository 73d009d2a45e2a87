"""The request pipeline shared by both services: errors mapped once, then identity.

The edge's access rules (client address, IP and geo rules, audit) join this pipeline in
the order DESIGN.md gives; its access step calls ``identify`` itself, one layer fewer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

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

    def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(error_body(request.path, status, message), status=status, headers=headers)

    try:
        return await handler(request)
    except WireError as exc:  # the repository's errors and the wire contract's
        return error_response(exc.status, exc.message, exc.headers)
    except InvalidDigest:
        return error_response(400, "Invalid checksum")
    except StorageFull as exc:
        log.error("storage full on %s %s: %s", request.method, request.path, exc)
        return error_response(507, "Insufficient storage: the node is out of disk space")
    except StorageError as exc:
        log.error("storage failure on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "Storage is unavailable, retry later")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        return error_response(exc.status, exc.reason, headers)
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error")


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    await identify(request)
    return await handler(request)


async def identify(request: web.Request) -> None:
    """Who is calling (the last step before the handler; the edge's access step ends with it, one
    middleware layer fewer). A credential presented is checked even beside a valid signed URL (a
    step before may have made the request the URL's reader): a bad one is a 401 either way,
    and a good one is the caller, whom the URL still lets read its file."""
    identified = await request.app[keys.authenticator].identify(request.headers)
    if identified.authenticated or keys.principal not in request:
        request[keys.principal] = identified
