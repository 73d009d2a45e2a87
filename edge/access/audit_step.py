"""The audit step: what the edge's pipeline (edge/pipeline.py) records of every request, refused
ones too, once the response has ended: complete or cut off, and how many body bytes went out.

Actions: ``download`` (GET/HEAD of an artifact), ``deploy``, ``delete``, ``read``
(storage API, repository list, other metadata), ``distribute`` (the transaction and
bundle API), ``admin`` (tokens, users, permissions, keys, rules, the audit trail),
``other`` (no route). Health checks (``api/system/ping``, ``api/system/readiness``) and
metrics scrapes (``/metrics``) are not recorded, but their bytes are counted all the same (the
metrics read them from the ``AccessContext``). A handler cut off before it said its status is
recorded as 499 (nginx's "client closed request").
"""

from __future__ import annotations

import functools
import json

from aiohttp import web

from repository.catalog import now_ms
from repository.http import keys as core

from .audit import AuditRecord, AuditTrail
from .context import AccessContext, IPAddress, access_context
from .middleware import request_target

UNRECORDED_ROUTES = frozenset({"ping", "readiness", "metrics"})
ROUTE_ACTIONS = {
    "download": "download",
    "deploy": "deploy",
    "delete": "delete",
    "other_method": "other",
    "storage_info": "read",
    "repositories": "read",
    "repository": "read",
    "version": "read",
    "api_not_found": "other",
    "bundles_list": "distribute",
    "bundle_delete": "distribute",
    "audit_query": "admin",
}
ADMIN_PREFIXES = ("/access/", "/artifactory/api/security/", "/artifactory/api/v2/security/")
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def remember_status(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """From the edge's answer hook (edge/requests.py), as a response is prepared: the status of a
    response a handler streams itself, for when it is cut off and the handler raises instead of
    returning the response."""
    ctx = request.get(access_context)
    if ctx is not None:
        ctx.status = response.status


@functools.lru_cache(maxsize=4096)
def _text(address: IPAddress) -> str:
    return str(address)


def record_request(
    trail: AuditTrail,
    request: web.Request,
    ctx: AccessContext,
    response: web.StreamResponse | None,
    status: int,
    seconds: float,
    *,
    aborted: bool,
) -> None:
    """The audit record of a finished request (``seconds``: from its arrival to its end)."""
    principal = request.get(core.principal)
    subject = principal.subject if principal is not None else ctx.subject
    token_id = principal.token_id if principal is not None and principal.token_id else ctx.token_id
    action = _action(request)
    repo, path = ctx.repo, ctx.path
    if repo is None:
        repo, path = request_target(request.raw_path)
    denied_by = ctx.denied_by or request.get(core.denied_by)
    if denied_by is None and status in (401, 403):
        denied_by = _error_message(response)
    trail.record(
        AuditRecord(
            now_ms(),
            subject,
            token_id,
            ctx.signed_kid,
            ctx.signed_iat,
            _text(ctx.client_ip) if ctx.client_ip is not None else None,
            ctx.country,
            request.method,
            action,
            repo,
            path,
            status,
            ctx.bytes_sent,
            denied_by,
            aborted,
            round(seconds * 1000),
            action == "download" and not aborted and _delivers_file(request, response, status),
            request.get(core.served_from),
        )
    )


def _action(request: web.Request) -> str:
    name = request.match_info.route.name
    if name in ROUTE_ACTIONS:
        return ROUTE_ACTIONS[name]
    if name is None:
        return "other"
    if name.startswith("tx_"):
        return "distribute"
    if request.path.startswith(ADMIN_PREFIXES) or request.method not in ("GET", "HEAD"):
        return "admin"
    return "read"


def _delivers_file(request: web.Request, response: web.StreamResponse | None, status: int) -> bool:
    """Whether a GET handed out the whole file or its end: what Artifactory counts as a download.

    A parallel or resumed download (several ranges) counts once, for the range that ends
    the file; a redirect to the storage counts unless it was for a range.
    """
    if request.method != "GET":
        return False
    if status == 200:
        return True
    if status == 206 and response is not None:
        first_last, _, size = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
        last = first_last.partition("-")[2]
        return last.isdigit() and size.isdigit() and int(last) + 1 == int(size)
    return status in REDIRECTS and "Range" not in request.headers


def _error_message(response: web.StreamResponse | None) -> str | None:
    """The message of an error body, where no rule was named (e.g. bad credentials)."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        return None
    try:
        return str(json.loads(body)["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
