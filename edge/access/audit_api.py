"""``GET /artifactory/api/audit``: the audit trail, filtered, newest first, paged or exported.

Parameters (each optional; anything else is a 400 that names it):

- ``since``, ``until``: ``2026-11-01`` (a date, UTC), ``2026-11-01T10:00:00Z`` (ISO 8601;
  no offset means UTC) or epoch milliseconds. ``since`` is inclusive, ``until`` exclusive;
  an ``until`` that is a date alone includes that whole day.
- ``repo``, ``subject``: exact; ``path``: exact, or a prefix when it ends with ``*``;
  ``ip``: an address or a CIDR block.
- ``action``: download, deploy, delete, read, admin, distribute, quarantine, other, or ``denied``
  for every refusal (401/403) whatever was attempted.
- ``limit``: records per page, 1 to 1000 (default 100); ``cursor``: the ``next`` of the
  previous page.
- ``format=jsonl``: every matching record (up to ``limit`` when given) as JSON lines,
  streamed.

Admins may read everything; a user with ``manage`` on a repo may read that repo's
records (``repo`` is then required).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, Forbidden, Unauthorized
from repository.http import keys as core
from repository.tokens import Role
from wire.timestamps import iso

from ..keys import audit_trail_key
from .audit_store import AuditQuery, AuditRow, AuditStore

ACTIONS = ("download", "deploy", "delete", "read", "admin", "distribute", "quarantine", "other", "denied")
PARAMETERS = frozenset({"since", "until", "repo", "path", "ip", "action", "subject", "limit", "cursor", "format"})
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 1000
MAX_TEXT = 1024
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


def parse_time(name: str, text: str, *, end_of_day: bool = False) -> int:
    """Epoch ms from a date, an ISO 8601 time or epoch ms; BadRequest naming the parameter."""
    text = text.strip()
    if text.isdigit() and text.isascii():
        value = int(text)
        if value > MAX_MS:
            raise BadRequest(f"'{name}' is out of range")
        return value
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return _ms(start + timedelta(days=1) if end_of_day else start)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"'{name}' must be a date (2026-11-01), an ISO 8601 time (2026-11-01T10:00:00Z) or epoch milliseconds"
        ) from None
    return _ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_query(params: Any) -> tuple[AuditQuery, str, bool]:
    """The query, the format, and whether a limit was given."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise BadRequest(f"Unknown parameter '{unknown[0]}'; expected some of {', '.join(sorted(PARAMETERS))}")
    for key in set(params):
        if len(params.getall(key)) > 1:
            raise BadRequest(f"Parameter '{key}' is given more than once")
        if len(params[key]) > MAX_TEXT:
            raise BadRequest(f"Parameter '{key}' is too long")
        if "\x00" in params[key]:  # no record holds one, and PostgreSQL cannot even compare with it
            raise BadRequest(f"Parameter '{key}' may not contain a NUL character")
    fmt = params.get("format", "json")
    if fmt not in ("json", "jsonl"):
        raise BadRequest("'format' must be json or jsonl")
    since = parse_time("since", params["since"]) if "since" in params else None
    until = parse_time("until", params["until"], end_of_day=True) if "until" in params else None
    action = params.get("action")
    if action is not None and action not in ACTIONS:
        raise BadRequest(f"'action' must be one of {', '.join(ACTIONS)}")
    ip = None
    if "ip" in params:
        try:
            ip = ipaddress.ip_network(params["ip"].strip(), strict=False)
        except ValueError:
            raise BadRequest("'ip' must be an IP address or a CIDR block") from None
    limit = _positive("limit", params.get("limit"))
    if limit is not None and limit > MAX_LIMIT:
        raise BadRequest(f"'limit' must be 1 to {MAX_LIMIT}")
    query = AuditQuery(
        since=since,
        until=until,
        repo=params.get("repo") or None,
        path=params.get("path") or None,
        ip=ip,
        action=action,
        subject=params.get("subject") or None,
        before_id=_positive("cursor", params.get("cursor")),
        limit=limit or DEFAULT_LIMIT,
    )
    return query, fmt, limit is not None


def _positive(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
        raise BadRequest(f"'{name}' must be a positive integer")
    return int(text)


def record_json(r: AuditRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "time": iso(r.time),
        "timeMillis": r.time,
        "subject": r.subject,
        "tokenId": r.token_id,
        "signedUrl": {"kid": r.signed_kid, "iat": r.signed_iat} if r.signed_kid else None,
        "clientIp": r.client_ip,
        "country": r.country,
        "method": r.method,
        "action": r.action,
        "repo": r.repo,
        "path": r.path,
        "status": r.status,
        "bytes": r.bytes,
        "deniedBy": r.denied_by,
        "aborted": bool(r.aborted),
        "durationMillis": r.duration_ms,
        "servedFrom": r.served_from,
    }


def _authorize(request: web.Request, query: AuditQuery) -> None:
    principal = request[core.principal]
    if principal.role is Role.admin:
        return
    if not principal.authenticated:
        request[core.denied_by] = "authentication required"
        raise Unauthorized()
    if query.repo is None or not request.app[core.permissions].may_manage_repo(principal, query.repo):
        request[core.denied_by] = f"'{principal.subject}' has no manage on {query.repo or 'every repo'}"
        raise Forbidden("Reading the audit trail needs the admin role, or manage on the repo given as 'repo'")


async def audit_query(request: web.Request) -> web.StreamResponse:
    query, fmt, limited = parse_query(request.query)
    _authorize(request, query)
    store = request.app[audit_trail_key].store
    if fmt == "jsonl":
        return await _export(request, store, query, query.limit if limited else None)
    rows = await store.query(query)
    more = len(rows) == query.limit
    return web.json_response(
        {"records": [record_json(r) for r in rows], "next": str(rows[-1].id) if more and rows else None},
        dumps=lambda data: json.dumps(data) + "\n",
    )


async def _export(request: web.Request, store: AuditStore, query: AuditQuery, limit: int | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    left = limit
    while left is None or left > 0:
        page = min(EXPORT_PAGE, left) if left is not None else EXPORT_PAGE
        rows = await store.query(_page(query, page))
        if rows:
            await response.write(_lines(rows))
        if left is not None:
            left -= len(rows)
        if len(rows) < page:
            break
        query = _page(query, page, before_id=rows[-1].id)
    await response.write_eof()
    return response


def _page(query: AuditQuery, limit: int, before_id: int | None = None) -> AuditQuery:
    return replace(query, limit=limit, before_id=before_id if before_id is not None else query.before_id)


def _lines(rows: Iterable[AuditRow]) -> bytes:
    return "".join(json.dumps(record_json(r)) + "\n" for r in rows).encode()
