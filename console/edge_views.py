"""Console pages of the edge registry (health, last seen, what each edge holds; add, remove) and of
the signing keys with their propagation to edges, through the same stores and orders as the API."""

from __future__ import annotations

import asyncio

from aiohttp import web

from distribution import orders
from distribution.api import READERS
from distribution.edges import check_health, parse_edge
from distribution.keys import http_key, runner_key, signer_key
from repository.console.auth import posted, see_other, signed_in
from repository.console.pages import console_page, render
from repository.http.auth import require_role
from repository.tokens import Role
from wire.errors import WireError
from wire.timestamps import iso

from .bundle_views import bundle_url


async def _edges_context(request: web.Request) -> dict[str, object]:
    runner = request.app[runner_key]
    edges = await check_health(request.app[http_key], runner.edges, await runner.edges.list())
    return {
        "edges": edges,
        "held": await runner.jobs.held(),
        "pending": await runner.jobs.pending_by_edge(),  # the lag: what is still to reach each edge
        "iso": iso,
        "url_of": bundle_url,
    }


@console_page
async def edge_list(request: web.Request) -> web.StreamResponse:
    """Every edge, pinged now (as ``GET /edges`` does), with the bundle versions it holds."""
    await signed_in(request)
    require_role(request, *READERS)
    return render(request, "edges.html", await _edges_context(request) | {"form": {}})


@console_page
async def add_edge(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, Role.admin)
    fields = ("name", "url", "site_name", "city_name", "country_code", "token")
    try:
        edge = parse_edge({k: form.get(k, "") for k in fields})
        await request.app[runner_key].edges.add(edge)
    except WireError as exc:  # the form again, with what is wrong; nothing stored
        context = await _edges_context(request) | {"form": form, "error": exc.message}
        return render(request, "edges.html", context, status=exc.status)
    return see_other("/ui/edges")


@console_page
async def remove_edge(request: web.Request) -> web.StreamResponse:
    await posted(request)
    require_role(request, Role.admin)
    await request.app[runner_key].edges.remove(request.match_info["edge"])
    return see_other("/ui/edges")


@console_page
async def key_list(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, *READERS)
    keys = await asyncio.to_thread(request.app[signer_key].keys)
    return render(request, "keys.html", {"keys": keys, "propagation": None, "alias_on_edges": orders.key_alias})


@console_page
async def propagate_keys(request: web.Request) -> web.StreamResponse:
    """Every signing key to every edge (``keys/gpg/propagate``); the page shows each edge's answer."""
    await posted(request)
    require_role(request, Role.admin)
    answer = await orders.propagate_keys(request.app[runner_key], request.app[signer_key])
    keys = await asyncio.to_thread(request.app[signer_key].keys)
    return render(request, "keys.html", {"keys": keys, "propagation": answer, "alias_on_edges": orders.key_alias})
