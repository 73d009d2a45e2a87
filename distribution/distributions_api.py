"""Handlers of edges, distributions and key propagation under ``/distribution/api/v1/``.

Registering edges, distributing and propagating keys need an admin token; any valid
token may read status. No answer ever carries an edge's token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.errors import BadRequest, NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role

from . import orders
from .api import READERS, _name_version
from .edges import Edge, check_health, parse_edge
from .keys import http_key, runner_key, signer_key
from .pull_api import pull_credentials_key
from .runner import JobRunner


def _runner(request: web.Request) -> JobRunner:
    return request.app[runner_key]


def _sites(edges: list[Edge]) -> list[dict[str, str]]:
    return [e.site_json() for e in edges]


async def register_edge(request: web.Request, body: dict[str, Any]) -> tuple[Edge, bool, str | None]:
    """Register the edge ``body`` describes (the API's and the console's add): the edge, whether it
    is new, and for a new pull-mode edge its credential, to be shown this once (only its sha256
    is stored)."""
    edge, new = await _runner(request).edges.add(parse_edge(body))
    credential = await request.app[pull_credentials_key].mint(edge.name) if new and edge.pulls else None
    return edge, new, credential


async def add_edge(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    edge, new, credential = await register_edge(request, await read_json_object(request))
    answer = edge.public_json()
    if credential is not None:
        answer["credential"] = credential
    return json_response(answer, status=201 if new else 200)


async def list_edges(request: web.Request) -> web.Response:
    """Every edge with its health, checked now (a ping each, in parallel)."""
    require_role(request, *READERS)
    store = _runner(request).edges
    edges = await check_health(request.app[http_key], store, await store.list())
    return json_response([e.public_json() for e in edges])


async def remove_edge(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await _runner(request).edges.remove(request.match_info["edge"])
    return web.Response(status=204)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        raise BadRequest("A JSON body with 'distribution_rules' is required")
    return await read_json_object(request)


async def distribute(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name, version = _name_version(request)
    order = orders.parse_distribute(await _body(request))
    dist_id, edges = await orders.distribute(_runner(request), name, version, order)
    if dist_id is None:
        return json_response({"id": None, "sites": _sites(edges)}, status=200)
    return json_response({"id": dist_id, "sites": _sites(edges)}, status=202)


async def repair(request: web.Request) -> web.Response:
    """Send a bundle version again to the edges that hold it, only what each lacks (``orders.repair``);
    the body, ``{"dry_run": bool}``, may be left out."""
    require_role(request, Role.admin)
    name, version = _name_version(request)
    dry_run = orders.parse_repair(await read_json_object(request) if request.can_read_body else {})
    dist_id, edges = await orders.repair(_runner(request), name, version, dry_run)
    return json_response({"id": dist_id, "sites": _sites(edges)}, status=200 if dist_id is None else 202)


async def undistribute(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name, version = _name_version(request)
    order = orders.parse_delete(await _body(request))
    dist_id, edges = await orders.undistribute(_runner(request), name, version, order)
    return json_response({"id": dist_id, "sites": _sites(edges)}, status=200 if dist_id is None else 202)


async def abort(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name, version = _name_version(request)
    runner = _runner(request)
    await runner.bundles.get(name, version)
    jobs = await runner.abort(name, version)
    if not jobs:
        return web.Response(status=204)
    sites = {j.edge: {"service_id": j.service_id, "name": j.edge, "type": "edge"} for j in jobs}
    ids = sorted({j.distribution_id for j in jobs})
    return json_response({"distribution_ids": ids, "sites": list(sites.values())}, status=202)


async def distribution_status(request: web.Request) -> web.Response:
    """One distribution (``{id}``) or all of a bundle version, newest first; 404 once the bundle is gone."""
    require_role(request, *READERS)
    name, version = _name_version(request)
    runner = _runner(request)
    await runner.bundles.get(name, version)
    files = runner.files_in_progress()
    raw = request.match_info.get("id")
    if raw is None:
        return json_response([d.as_json(files) for d in await runner.jobs.history(name, version)])
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"No distribution {raw!r} of {name}/{version}")
    found = await runner.jobs.get(name, version, int(raw))
    if found is None:
        raise NotFound(f"No distribution {raw} of {name}/{version}")
    return json_response(found.as_json(files))


async def propagate_keys(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return json_response(await orders.propagate_keys(_runner(request), request.app[signer_key]))
