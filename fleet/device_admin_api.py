"""Handlers of ``/fleet/api/v1/enrollment-tokens``, ``devices`` and ``groups``: what operators do.

Any valid token may read. Enrollment tokens and changes to devices (revoking, the poll
interval of a device or a group) need the admin role: a token enrolls devices into the fleet, and revoking cuts
one off, so neither is for a release manager's distributor token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.entries import now_ms
from repository.errors import BadRequest
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role
from wire.fleet import MAX_PAGE, MAX_POLL_SECONDS, MIN_POLL_SECONDS, check_name

from .device_store import FleetFilter
from .enrollment_tokens import parse_token_request
from .keys import device_store_key, enrollment_tokens_key

READERS = (Role.reader, Role.deployer, Role.distributor, Role.admin)


async def create_token(request: web.Request) -> web.Response:
    user = require_role(request, Role.admin).subject
    group, tags, expires_in = parse_token_request(await read_json_object(request))
    token, secret = await request.app[enrollment_tokens_key].create(group, tags, expires_in, user)
    return json_response({**token.to_json(now_ms()), "token": secret}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    now = now_ms()
    return json_response([t.to_json(now) for t in await request.app[enrollment_tokens_key].list()])


async def revoke_token(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await request.app[enrollment_tokens_key].revoke(request.match_info["id"])
    return web.Response(status=204)


def fleet_filter(query: Any) -> FleetFilter:
    """The fleet list's query: ``group``, ``tag=k=v`` (repeatable), ``online=true|false``, ``app``,
    ``version``, ``limit`` (1 to ``MAX_PAGE``), ``after`` (the name the page before ended with).
    A name that breaks the naming rule is the wire contract's InvalidInput, a 400 too."""
    if unknown := sorted(set(query) - {"group", "tag", "online", "app", "version", "limit", "after"}):
        raise BadRequest(f"Unknown parameter {unknown[0]!r}")
    tags = {}
    for tag in query.getall("tag", []):
        key, equals, value = tag.partition("=")
        if not equals:
            raise BadRequest(f"Invalid tag {tag!r}: write it key=value")
        tags[check_name(key, "tag key")] = value
    online = query.get("online")
    if online not in (None, "true", "false"):
        raise BadRequest("Invalid online: true or false")
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise BadRequest(f"Invalid limit: a number from 1 to {MAX_PAGE}")
    group, app, after = query.get("group"), query.get("app"), query.get("after")
    return FleetFilter(
        group=None if group is None else check_name(group, "group"),
        tags=tags,
        online=None if online is None else online == "true",
        app=None if app is None else check_name(app, "app"),
        version=query.get("version"),
        after=None if after is None else check_name(after, "after"),
        limit=int(limit),
    )


async def list_devices(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    devices, next_name = await request.app[device_store_key].page(fleet_filter(request.query))
    return json_response({"devices": devices, "next": next_name})


async def get_device(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response(await request.app[device_store_key].get(request.match_info["name"]))


async def poll_interval(request: web.Request) -> int:
    """The seconds of a ``{"poll_interval": seconds}`` body, the settings of a device or a group."""
    body = await read_json_object(request)
    if set(body) != {"poll_interval"}:
        raise BadRequest('The settings are {"poll_interval": seconds}')
    seconds = body["poll_interval"]
    if type(seconds) is not int or not MIN_POLL_SECONDS <= seconds <= MAX_POLL_SECONDS:
        raise BadRequest(f"Invalid poll_interval: an integer from {MIN_POLL_SECONDS} to {MAX_POLL_SECONDS} seconds")
    return seconds


async def update_device(request: web.Request) -> web.Response:
    """``{"poll_interval": seconds}``: the device hears it at its next check-in."""
    require_role(request, Role.admin)
    seconds = await poll_interval(request)
    store = request.app[device_store_key]
    name = request.match_info["name"]
    await store.set_poll_interval(name, seconds)
    return json_response(await store.get(name))


async def update_group(request: web.Request) -> web.Response:
    """``{"poll_interval": seconds}`` for every device of the group, and those enrolled into it later."""
    require_role(request, Role.admin)
    group = check_name(request.match_info["group"], "group")
    seconds = await poll_interval(request)
    return json_response(await request.app[device_store_key].set_group_poll_interval(group, seconds))


async def list_groups(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response(await request.app[device_store_key].groups())


async def revoke_device(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    store = request.app[device_store_key]
    name = request.match_info["name"]
    await store.revoke(name)
    return json_response(await store.get(name))
