"""The runtime inventory's part of the service: its stores and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from distribution.keys import settings_key
from repository.http.setup import database
from wire.fleet import FLEET_API
from wire.runtime import RUNTIME, RuntimeSettings

from . import runtime_api
from .runtime_ingest import RuntimeIngest
from .runtime_keys import runtime_ingest_key, runtime_policy_key, runtime_queries_key
from .runtime_policy import RuntimePolicy
from .runtime_queries import RuntimeQueries

BASE = FLEET_API + "/runtime"


def setup_runtime(app: web.Application) -> None:
    app.cleanup_ctx.append(_runtime_ctx)
    app.router.add_routes(
        [
            web.post(RUNTIME, runtime_api.report, name="fleet_runtime_report"),
            web.get(BASE + "/where/{name}/{version}", runtime_api.where, name="fleet_runtime_where"),
            web.get(BASE + "/devices/{name}", runtime_api.device, name="fleet_runtime_device"),
            web.get(BASE + "/devices/{name}/changes", runtime_api.changes, name="fleet_runtime_changes"),
            web.get(BASE + "/unknown", runtime_api.unknown, name="fleet_runtime_unknown"),
            web.get(BASE + "/drift", runtime_api.drift, name="fleet_runtime_drift"),
            web.get(BASE + "/events", runtime_api.events, name="fleet_runtime_events"),
            web.get(BASE + "/groups/{group}", runtime_api.get_group, name="fleet_runtime_group_get"),
            web.put(BASE + "/groups/{group}", runtime_api.put_group, name="fleet_runtime_group_put"),
        ]
    )


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    db, settings = app[database], app[settings_key]
    default = RuntimeSettings(enabled=settings.fleet_runtime_enabled, interval=settings.fleet_runtime_interval)
    app[runtime_ingest_key] = RuntimeIngest(db, settings.fleet_runtime_history, settings.fleet_runtime_events)
    app[runtime_queries_key] = RuntimeQueries(db)
    app[runtime_policy_key] = RuntimePolicy(db, default)
    yield
