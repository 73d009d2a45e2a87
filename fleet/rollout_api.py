"""Handlers of the rollout side: deployments (``/fleet/api/v1/deployments``), the fleet's URL
key, and the device's feedback.

Roles, as the Distribution service's own API has them: any valid token reads; making and
steering deployments and pushing the URL key to edges need an admin or a distributor (the
role that distributes releases); devices call with their own credential only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from distribution.keys import bundles_key
from repository.errors import BadRequest, Conflict, NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role
from wire.fleet import DEVICE_API, FEEDBACK, FLEET_API, Feedback

from .devices import require_device
from .keys import device_lookup_key
from .rollout_keys import deployments_key, feedback_writer_key, rollout_actions_key, url_key_pusher_key
from .rollout_plan import parse_deployment
from .rollout_sources import sources
from .rollout_store import MAX_PAGE, OPERATIONS, PAGE, Deployment

DEPLOYMENTS = f"{FLEET_API}/deployments"
READERS = (Role.reader, Role.deployer, Role.distributor, Role.admin)
STEERS = (Role.admin, Role.distributor)


def rollout_routes() -> list[web.AbstractRouteDef]:
    return [
        web.post(DEPLOYMENTS, create_deployment, name="fleet_deployment_create"),
        web.get(DEPLOYMENTS, list_deployments, name="fleet_deployment_list"),
        web.get(DEPLOYMENTS + "/{id}", get_deployment, name="fleet_deployment_get"),
        web.post(DEPLOYMENTS + "/{id}/{operation:pause|resume|cancel|rollback}", operate, name="fleet_deployment_op"),
        web.post(f"{FLEET_API}/url-key/propagate", propagate_url_key, name="fleet_url_key_propagate"),
        web.post(FEEDBACK, feedback, name="fleet_feedback"),
        web.get(f"{DEVICE_API}/actions/{{action_id}}/sources", sources, name="fleet_sources"),
    ]


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > high:
        raise BadRequest(f"'{name}' must be an integer from 0 to {high}")
    return int(raw)


def _deployment_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"Deployment {raw!r} not found")
    return int(raw)


async def _described(request: web.Request, deployment: Deployment, status: int = 200) -> web.Response:
    """A deployment with its phases (devices by state) and a page of its devices (``?after=&limit=``)."""
    store = request.app[deployments_key]
    after = _query_int(request, "after", 0, 2**62)
    limit = _query_int(request, "limit", PAGE, MAX_PAGE) or PAGE
    devices = await store.devices(deployment.id, after, limit)
    body: dict[str, Any] = deployment.to_json() | {
        "phases": await store.phase_states(deployment.id),
        "devices": devices,
        "next": devices[-1]["row"] if len(devices) == limit else None,
    }
    return json_response(body, status=status)


async def create_deployment(request: web.Request) -> web.Response:
    user = require_role(request, *STEERS).subject
    asked = parse_deployment(await read_json_object(request))
    store = request.app[deployments_key]
    spec = await store.app(asked.app)
    bundle = await request.app[bundles_key].get(spec.bundle, asked.version)  # 404 when it does not exist
    if bundle.state != "SIGNED":
        raise Conflict(f"Release bundle {spec.bundle}/{asked.version} is not signed; sign it before deploying it")
    deployment = await store.create(asked, spec, user)
    await request.app[rollout_actions_key].changed()
    request.app[url_key_pusher_key].soon()  # edges must trust the URLs devices will download with
    return await _described(request, deployment, status=201)


async def list_deployments(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    before = _query_int(request, "before", 0, 2**62) or None
    limit = _query_int(request, "limit", PAGE, MAX_PAGE) or PAGE
    found = await request.app[deployments_key].page(before, limit)
    return json_response(
        {"deployments": [d.to_json() for d in found], "next": found[-1].id if len(found) == limit else None}
    )


async def get_deployment(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    return await _described(request, await request.app[deployments_key].get(_deployment_id(request)))


async def steer(app: web.Application, deployment_id: int, operation: str) -> Deployment:
    """Pause, resume, cancel or roll back a deployment, and tell the devices' actions it changed:
    what the REST call and the console's buttons both do."""
    if operation not in OPERATIONS:
        raise BadRequest(f"Unknown operation {operation!r}; one of {', '.join(sorted(OPERATIONS))}")
    deployment, changed = await app[deployments_key].operate(deployment_id, operation)
    if changed:
        await app[rollout_actions_key].changed()
    return deployment


async def operate(request: web.Request) -> web.Response:
    require_role(request, *STEERS)
    deployment = await steer(request.app, _deployment_id(request), request.match_info["operation"])
    return await _described(request, deployment)


async def propagate_url_key(request: web.Request) -> web.Response:
    require_role(request, *STEERS)
    return json_response(await request.app[url_key_pusher_key].push())


async def feedback(request: web.Request) -> web.Response:
    """A device's report of one of its actions (module ``rollout_feedback``)."""
    device = await require_device(request, request.app[device_lookup_key])
    report = Feedback.from_json(await read_json_object(request))
    if await request.app[feedback_writer_key].record(device.id, report):
        await request.app[rollout_actions_key].changed()
    return json_response({"action_id": report.action_id, "state": report.state.value})
