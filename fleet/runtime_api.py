"""Handlers of the runtime inventory: the device's report (``wire.runtime.RUNTIME``) and the
queries under ``/fleet/api/v1/runtime/`` (any valid token reads; group settings need admin)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.entries import now_ms
from repository.errors import BadRequest, Forbidden
from repository.http.auth import require_role
from repository.http.json_body import read_json, read_json_object
from repository.http.responses import json_response
from repository.tokens import Role
from wire.fleet import check_name
from wire.runtime import EVENT_KINDS, MAX_REPORT_BYTES, SHA256_RE, RuntimeReport, RuntimeSettings

from .device_admin_api import READERS
from .devices import require_device
from .keys import device_lookup_key
from .runtime_keys import runtime_ingest_key, runtime_policy_key, runtime_queries_key
from .runtime_queries import MAX_EVENTS, MAX_UNKNOWN, MAX_WHERE_DEVICES


async def report(request: web.Request) -> web.Response:
    """Store a device's report about itself; a report naming another device is refused, nothing stored."""
    device = await require_device(request, request.app[device_lookup_key])
    body = RuntimeReport.from_json(await read_json(request, limit=MAX_REPORT_BYTES))
    if body.device != device.name:
        raise Forbidden(f"This credential is device {device.name!r}: it cannot report as {body.device!r}")
    answer = await request.app[runtime_ingest_key].ingest(device.id, body, now_ms())
    return json_response(answer.to_json())


def _group(request: web.Request, others: set[str] | None = None) -> str | None:
    if unknown := sorted(set(request.query) - {"group", *(others or ())}):
        raise BadRequest(f"Unknown parameter {unknown[0]!r}")
    group = request.query.get("group")
    return None if group is None else check_name(group, "group")


async def where(request: web.Request) -> web.Response:
    """``after`` (the last device of the page before) and ``limit`` (devices) page through them."""
    require_role(request, *READERS)
    info, query = request.match_info, request.query
    if unknown_keys := sorted(set(query) - {"after", "limit"}):
        raise BadRequest(f"Unknown parameter {unknown_keys[0]!r}")
    after = query.get("after")
    limit = _number(query, "limit", MAX_WHERE_DEVICES, 1, MAX_WHERE_DEVICES)
    queries = request.app[runtime_queries_key]
    found = await queries.where(
        info["name"], info["version"], "" if after is None else check_name(after, "after"), limit
    )
    return json_response(found)


async def device(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response(await request.app[runtime_queries_key].device(request.match_info["name"]))


async def changes(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response(await request.app[runtime_queries_key].changes(request.match_info["name"]))


async def unknown(request: web.Request) -> web.Response:
    """``group``; ``after`` (the last sha256 of the page before) and ``limit`` page through them."""
    require_role(request, *READERS)
    query = request.query
    group = _group(request, {"after", "limit"})
    after = query.get("after")
    if after is not None and not SHA256_RE.fullmatch(after):
        raise BadRequest("Invalid after: a sha256, 64 lower-case hex digits")
    limit = _number(query, "limit", 100, 1, MAX_UNKNOWN)
    return json_response(await request.app[runtime_queries_key].unknown(group, after or "", limit))


async def drift(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response(await request.app[runtime_queries_key].drift(_group(request)))


def _number(query: Any, key: str, default: int, low: int, high: int) -> int:
    text = query.get(key, str(default))
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(f"Invalid {key}: a number from {low} to {high}")
    return int(text)


async def events(request: web.Request) -> web.Response:
    """``kind`` (unknown_executable, drift), ``device``, ``after`` (the last id seen), ``limit``."""
    require_role(request, *READERS)
    query = request.query
    if unknown_keys := sorted(set(query) - {"kind", "device", "after", "limit"}):
        raise BadRequest(f"Unknown parameter {unknown_keys[0]!r}")
    kind = query.get("kind")
    if kind is not None and kind not in EVENT_KINDS:
        raise BadRequest(f"Invalid kind: one of {', '.join(EVENT_KINDS)}")
    name = query.get("device")
    found = await request.app[runtime_queries_key].events(
        kind=kind,
        device=None if name is None else check_name(name, "device"),
        after=_number(query, "after", 0, 0, 2**62),
        limit=_number(query, "limit", 100, 1, MAX_EVENTS),
    )
    return json_response(found)


async def get_group(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    group = check_name(request.match_info["group"], "group")
    return json_response({"group": group, **(await request.app[runtime_policy_key].get(group)).to_json()})


async def put_group(request: web.Request) -> web.Response:
    """Replace a group's sensor settings; fields left out take the defaults."""
    require_role(request, Role.admin)
    group = check_name(request.match_info["group"], "group")
    settings = RuntimeSettings.from_json(await read_json_object(request), strict=True)
    await request.app[runtime_policy_key].set(group, settings)
    return json_response({"group": group, **settings.to_json()})
