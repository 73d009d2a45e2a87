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
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

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


# The last client's address and its text. Addresses come from one cache (``parse_address``), so a
# client's next request, the usual case (and every request behind a proxy that is not trusted),
# brings the same object again: an identity test, where hashing an address runs Python code.
_last_client: tuple[IPAddress | None, str | None] = (None, None)


def _client_text(address: IPAddress | None) -> str | None:
    global _last_client
    last, text = _last_client
    if address is not last:
        text = None if address is None else _text(address)
        _last_client = (address, text)
    return text


# What a route's requests are recorded as, where the route alone says; else (None) their path and
# method say. Keyed by the route object: naming it costs more than the lookup. Only the app's
# routes, which have names: aiohttp makes an unnamed one for each request it finds no route for.
_route_actions: dict[web.AbstractRoute, str | None] = {}
ROUTES_REMEMBERED = 1024
# tuple.__new__ makes a record from a tuple in C, where the NamedTuple's own __new__ is a Python
# function of 18 arguments: half the cost of the record
_make_record = cast(Callable[[type[AuditRecord], tuple[Any, ...]], AuditRecord], tuple.__new__)


def record_request(
    trail: AuditTrail,
    request: web.Request,
    ctx: AccessContext,
    response: web.StreamResponse | None,
    status: int,
    seconds: float,
    *,
    aborted: bool,
    at: int,
) -> None:
    """The audit record of a request that finished ``at`` (epoch ms), ``seconds`` after it arrived."""
    principal = request.get(core.principal)
    if principal is not None:
        subject, token_id = principal.subject, principal.token_id or ctx.token_id
    else:
        subject, token_id = ctx.subject, ctx.token_id
    route = request.match_info.route
    try:
        action = _route_actions[route]
    except KeyError:  # a route not seen yet, or aiohttp's own for a 404 or 405
        action = _route_action(route)
    if action is None:
        action = _action_by_path(request)
    repo, path = ctx.repo, ctx.path
    if repo is None:
        repo, path = request_target(request.raw_path)
    denied_by = ctx.denied_by or request.get(core.denied_by)
    if denied_by is None and status in (401, 403):
        denied_by = _error_message(response)
    trail.record(
        _make_record(
            AuditRecord,
            (
                at, subject, token_id, ctx.signed_kid, ctx.signed_iat, _client_text(ctx.client_ip),
                ctx.country, request.method, action, repo, path, status, ctx.bytes_sent, denied_by, aborted,
                round(seconds * 1000),
                action == "download" and not aborted and _delivers_file(request, response, status),
                request.get(core.served_from),
            ),
        )
    )  # fmt: skip


def _route_action(route: web.AbstractRoute) -> str | None:
    """The action of every request of ``route`` (remembered for a named route); None where it
    depends on the request."""
    name = route.name
    if name is None:
        return "other"
    action = ROUTE_ACTIONS.get(name)
    if action is None and name.startswith("tx_"):
        action = "distribute"
    if len(_route_actions) >= ROUTES_REMEMBERED:  # an app has a few hundred; a process that makes many apps
        _route_actions.clear()  # (tests) would otherwise hold every one of them
    _route_actions[route] = action
    return action


def _action_by_path(request: web.Request) -> str:
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
