"""Handlers of ``/fleet/api/v1/apps``: how each app installs on devices.

Any valid token may read; defining an app takes the admin or the distributor role, the
release manager's, who also makes the bundles the app installs.
"""

from __future__ import annotations

from aiohttp import web

from repository.errors import NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role

from .apps import app_json, parse_app
from .device_admin_api import READERS
from .keys import app_store_key

WRITERS = (Role.distributor, Role.admin)


async def create_app_spec(request: web.Request) -> web.Response:
    """201 for a new app, 200 for the same one again, 409 for other fields under its name."""
    require_role(request, *WRITERS)
    spec = parse_app(await read_json_object(request))
    new = await request.app[app_store_key].create(spec)
    return json_response(app_json(spec), status=201 if new else 200)


async def put_app_spec(request: web.Request) -> web.Response:
    require_role(request, *WRITERS)
    spec = parse_app(await read_json_object(request), request.match_info["name"])
    new = await request.app[app_store_key].put(spec)
    return json_response(app_json(spec), status=201 if new else 200)


async def list_app_specs(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return json_response([app_json(a) for a in await request.app[app_store_key].list()])


async def get_app_spec(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    name = request.match_info["name"]
    spec = await request.app[app_store_key].get_app(name)
    if spec is None:
        raise NotFound(f"No app {name!r}")
    return json_response(app_json(spec))


async def delete_app_spec(request: web.Request) -> web.Response:
    require_role(request, *WRITERS)
    await request.app[app_store_key].delete(request.match_info["name"])
    return web.Response(status=204)
