"""The runtime inventory's part of the service: its stores and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from distribution.keys import settings_key
from repository.http.setup import database
from wire.runtime import RUNTIME, RUNTIME_API, RuntimeSettings

from . import runtime_api
from .runtime_ingest import RuntimeIngest
from .runtime_keys import runtime_ingest_key, runtime_policy_key, runtime_queries_key
from .runtime_policy import RuntimePolicy
from .runtime_queries import RuntimeQueries


def setup_runtime(app: web.Application) -> None:
    app.cleanup_ctx.append(_runtime_ctx)
    app.router.add_routes(
        [
            web.post(RUNTIME, runtime_api.report, name="fleet_runtime_report"),
            web.get(RUNTIME_API + "/where/{name}/{version}", runtime_api.where, name="fleet_runtime_where"),
            web.get(RUNTIME_API + "/devices/{name}", runtime_api.device, name="fleet_runtime_device"),
            web.get(RUNTIME_API + "/devices/{name}/changes", runtime_api.changes, name="fleet_runtime_changes"),
            web.get(RUNTIME_API + "/unknown", runtime_api.unknown, name="fleet_runtime_unknown"),
            web.get(RUNTIME_API + "/drift", runtime_api.drift, name="fleet_runtime_drift"),
            web.get(RUNTIME_API + "/events", runtime_api.events, name="fleet_runtime_events"),
            web.get(RUNTIME_API + "/groups/{group}", runtime_api.get_group, name="fleet_runtime_group_get"),
            web.put(RUNTIME_API + "/groups/{group}", runtime_api.put_group, name="fleet_runtime_group_put"),
        ]
    )


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    db, settings = app[database], app[settings_key]
    default = RuntimeSettings(enabled=settings.fleet_runtime_enabled, interval=settings.fleet_runtime_interval)
    app[runtime_ingest_key] = RuntimeIngest(db, settings.fleet_runtime_history, settings.fleet_runtime_events)
    app[runtime_queries_key] = RuntimeQueries(db)
    app[runtime_policy_key] = RuntimePolicy(db, default)
    yield
