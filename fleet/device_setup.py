"""The device side of the fleet: its stores, routes and background work."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from repository.http.setup import database

from .devices import DeviceLookup
from .keys import device_lookup_key


def setup_devices(app: web.Application) -> None:
    app.cleanup_ctx.append(_devices_ctx)


async def _devices_ctx(app: web.Application) -> AsyncIterator[None]:
    app[device_lookup_key] = DeviceLookup(app[database])
    yield
