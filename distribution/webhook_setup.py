"""Webhooks in the service's app: the deliverer as a background task of its own, beside the job runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from repository.http.setup import database

from .keys import publish_key, runner_key, settings_key, webhooks_key
from .webhook_events import publish
from .webhook_sender import WebhookDeliverer, client_session
from .webhook_store import WebhookStore


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Started with the service (queued deliveries resume), cancelled and awaited on shutdown."""
    settings = app[settings_key]
    app[publish_key] = publish
    session = client_session(settings)
    # this replica's lasting name, the job runner's: a replica restarted takes its leases back at once
    holder = app[runner_key].jobs.holder or ""
    deliverer = WebhookDeliverer(WebhookStore(app[database], holder), session, settings)
    app[webhooks_key] = deliverer
    task = asyncio.create_task(deliverer.run(), name="webhook deliverer")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await deliverer.close()
    await session.close()
