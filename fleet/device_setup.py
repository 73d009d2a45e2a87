"""The device side of the fleet: its stores, routes and background work."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from distribution.keys import settings_key, signer_key
from repository.http.setup import database
from wire.fleet import CHECK_IN, ENROLL, FLEET_API, KEYS

from . import app_api, device_admin_api, device_api
from .apps import AppStore
from .device_store import DeviceStore
from .devices import DeviceLookup
from .enrollment import Enroller
from .enrollment_tokens import EnrollmentTokenStore
from .heartbeats import HeartbeatWriter, writer_ctx
from .keys import (
    app_store_key,
    device_lookup_key,
    device_store_key,
    enroller_key,
    enrollment_tokens_key,
    heartbeat_writer_key,
    keys_document_key,
)
from .signing_keys import KeysDocument

TOKENS = FLEET_API + "/enrollment-tokens"
DEVICES = FLEET_API + "/devices"
APPS = FLEET_API + "/apps"
GROUPS = FLEET_API + "/groups"


def setup_devices(app: web.Application) -> None:
    app.cleanup_ctx.append(_devices_ctx)
    app.router.add_routes(
        [
            web.post(ENROLL, device_api.enroll, name="fleet_enroll"),
            web.post(CHECK_IN, device_api.check_in, name="fleet_check_in"),
            web.get(KEYS, device_api.signing_keys, name="fleet_keys"),
            web.post(TOKENS, device_admin_api.create_token, name="fleet_token_create"),
            web.get(TOKENS, device_admin_api.list_tokens, name="fleet_token_list"),
            web.delete(TOKENS + "/{id}", device_admin_api.revoke_token, name="fleet_token_revoke"),
            web.get(DEVICES, device_admin_api.list_devices, name="fleet_device_list"),
            web.get(DEVICES + "/{name}", device_admin_api.get_device, name="fleet_device_get"),
            web.put(DEVICES + "/{name}", device_admin_api.update_device, name="fleet_device_update"),
            web.post(DEVICES + "/{name}/revoke", device_admin_api.revoke_device, name="fleet_device_revoke"),
            web.get(GROUPS, device_admin_api.list_groups, name="fleet_group_list"),
            web.put(GROUPS + "/{group}", device_admin_api.update_group, name="fleet_group_update"),
            web.post(APPS, app_api.create_app_spec, name="fleet_app_create"),
            web.get(APPS, app_api.list_app_specs, name="fleet_app_list"),
            web.get(APPS + "/{name}", app_api.get_app_spec, name="fleet_app_get"),
            web.put(APPS + "/{name}", app_api.put_app_spec, name="fleet_app_put"),
            web.delete(APPS + "/{name}", app_api.delete_app_spec, name="fleet_app_delete"),
        ]
    )


async def _devices_ctx(app: web.Application) -> AsyncIterator[None]:
    db, settings = app[database], app[settings_key]
    lookup = DeviceLookup(db)
    tokens = EnrollmentTokenStore(db)
    writer = HeartbeatWriter(db, settings.fleet_heartbeat_history)
    app[device_lookup_key] = lookup
    app[enrollment_tokens_key] = tokens
    app[enroller_key] = Enroller(db, tokens, lookup)
    app[device_store_key] = DeviceStore(db, lookup, settings.fleet_offline_after_polls)
    app[heartbeat_writer_key] = writer
    app[app_store_key] = AppStore(db)
    app[keys_document_key] = KeysDocument(app[signer_key])
    async for _ in writer_ctx(writer):
        yield
