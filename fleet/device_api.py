"""Handlers of the device protocol (``wire.fleet``): enroll, check in, fetch the signing keys.

Devices authenticate with their own credential (``require_device``), never with a user's
token; enrolling needs none but an enrollment token in the body.
"""

from __future__ import annotations

from aiohttp import web

from distribution.keys import settings_key
from repository.entries import now_ms
from repository.http.json_body import read_json
from repository.http.responses import json_response
from wire.fleet import CheckIn, Enrollment, EnrollRequest, Heartbeat

from .devices import require_device
from .heartbeats import Beat
from .keys import (
    action_source_key,
    device_lookup_key,
    enroller_key,
    heartbeat_writer_key,
    keys_document_key,
)
from .runtime_keys import runtime_policy_key

# A heartbeat of 256 apps with long versions stays well under this.
MAX_DEVICE_BODY = 256 * 1024


async def enroll(request: web.Request) -> web.Response:
    wanted = EnrollRequest.from_json(await read_json(request, limit=MAX_DEVICE_BODY))
    poll_interval = request.app[settings_key].fleet_poll_interval
    device, credential = await request.app[enroller_key].enroll(wanted, poll_interval)
    published = await request.app[keys_document_key].current()
    answer = Enrollment(device.id, device.name, device.group, credential, device.poll_interval, published.keys)
    return json_response(answer.to_json(), status=201)


async def check_in(request: web.Request) -> web.Response:
    """Store the heartbeat (committed before the answer), then say what to do and when to call again."""
    device = await require_device(request, request.app[device_lookup_key])
    heartbeat = Heartbeat.from_json(await read_json(request, limit=MAX_DEVICE_BODY))
    await request.app[heartbeat_writer_key].write(Beat(device.id, heartbeat, now_ms()))
    actions = await request.app[action_source_key].actions_for(device, heartbeat)
    published = await request.app[keys_document_key].current()
    runtime = await request.app[runtime_policy_key].get(device.group)
    return json_response(CheckIn(device.poll_interval, tuple(actions), published.digest, runtime).to_json())


async def signing_keys(request: web.Request) -> web.Response:
    await require_device(request, request.app[device_lookup_key])
    published = await request.app[keys_document_key].current()
    return json_response(published.signed.to_json())
