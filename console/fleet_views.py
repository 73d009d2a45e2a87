"""Console pages of the fleet: devices with their online state and versions, deployments with their
progress per phase, and the pause, resume, cancel and rollback buttons, through the fleet's own
stores and ``steer`` as its REST handlers call them."""

from __future__ import annotations

from aiohttp import web

from distribution.api import READERS
from fleet.device_admin_api import fleet_filter
from fleet.keys import device_store_key
from fleet.rollout_api import STEERS, steer
from fleet.rollout_keys import deployments_key
from fleet.rollout_store import OPERATIONS, PAGE
from fleet.runtime_keys import runtime_queries_key
from fleet.runtime_queries import MAX_WHERE_DEVICES
from repository.console.auth import posted, see_other, signed_in
from repository.console.pages import console_page, render
from repository.errors import NotFound
from repository.http.auth import require_role

# rows of each runtime list a page shows (the API pages through all of them)
RUNTIME_ROWS = 100


def _deployment_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"Deployment {raw!r} not found")
    return int(raw)


@console_page
async def fleet_page(request: web.Request) -> web.StreamResponse:
    """The first page of devices (filtered as ``GET /fleet/api/v1/devices`` is) and the newest deployments."""
    await signed_in(request)
    require_role(request, *READERS)
    devices, more = await request.app[device_store_key].page(fleet_filter(request.query))
    deployments = await request.app[deployments_key].page(None, PAGE)
    context = {"devices": devices, "more": more, "deployments": deployments, "group": request.query.get("group", "")}
    return render(request, "fleet.html", context)


@console_page
async def runtime_page(request: web.Request) -> web.StreamResponse:
    """The runtime inventory: where a bundle version runs (``?bundle=&version=``), executables no
    bundle ships, drift, and the newest events, each from the queries its REST call makes."""
    await signed_in(request)
    require_role(request, *READERS)
    queries = request.app[runtime_queries_key]
    bundle, version = request.query.get("bundle", "").strip(), request.query.get("version", "").strip()
    where = await queries.where(bundle, version, "", MAX_WHERE_DEVICES) if bundle and version else None
    context = {
        "bundle": bundle,
        "version": version,
        "where": where,
        "unknown": await queries.unknown(None, "", RUNTIME_ROWS),
        "drift": await queries.drift(None),
        "events": await queries.events(kind=None, device=None, after=0, limit=RUNTIME_ROWS),
    }
    return render(request, "runtime.html", context)


@console_page
async def deployment_page(request: web.Request) -> web.StreamResponse:
    session = await signed_in(request)
    require_role(request, *READERS)
    store = request.app[deployments_key]
    deployment = await store.get(_deployment_id(request))
    context = {
        "d": deployment,
        "phases": await store.phase_states(deployment.id),
        # the buttons that apply in the deployment's state, for those who may steer it
        "operations": [op for op, (_, allowed) in sorted(OPERATIONS.items()) if deployment.state in allowed]
        if session.principal.role in STEERS
        else [],
    }
    return render(request, "deployment.html", context)


@console_page
async def operate(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, *STEERS)
    deployment = await steer(request.app, _deployment_id(request), form.get("operation", ""))
    return see_other(f"/ui/fleet/deployments/{deployment.id}")
