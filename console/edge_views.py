"""Console pages of the edge registry (health, last seen, what each edge holds; add, remove) and of
the signing keys with their propagation to edges, through the same stores and orders as the API."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from distribution import orders
from distribution.api import READERS
from distribution.distributions_api import register_edge
from distribution.edges import PULL, check_health
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
    parent_of: dict[str, list[str]] = {}
    for e in edges:
        if e.parent is not None:
            parent_of.setdefault(e.parent, []).append(e.name)
    return {
        "edges": edges,
        # who may be a parent: a push-mode edge pushed to directly (tiers are two deep)
        "parents": [e.name for e in edges if not e.pulls and e.parent is None],
        "parent_of": parent_of,
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


def _edge_body(form: MultiDictProxy[str]) -> dict[str, Any]:
    """The form as the API's registration body, fields left empty left out: the API's parser says
    what a mode lacks or may not have (a pull-mode edge has no URL, token or parent)."""
    body: dict[str, Any] = {k: form.get(k, "") for k in ("name", "site_name", "city_name", "country_code")}
    if form.get("mode") == PULL:
        body["mode"] = PULL
    else:  # push mode needs both, so an empty one is sent, and named as missing
        body |= {"url": form.get("url", ""), "token": form.get("token", "")}
    for optional in ("url", "token", "parent"):
        if value := form.get(optional, "").strip():
            body[optional] = value
    return body


@console_page
async def add_edge(request: web.Request) -> web.StreamResponse:
    """A pull-mode edge's credential is on the answer, this once, as the API and CLI give it."""
    form = await posted(request)
    require_role(request, Role.admin)
    try:
        edge, _, credential = await register_edge(request, _edge_body(form))
    except WireError as exc:  # the form again, with what is wrong; nothing stored
        context = await _edges_context(request) | {"form": form, "error": exc.message}
        return render(request, "edges.html", context, status=exc.status)
    if credential is None:
        return see_other("/ui/edges")
    context = await _edges_context(request) | {"form": {}, "added": edge, "credential": credential}
    return render(request, "edges.html", context, status=201)


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
