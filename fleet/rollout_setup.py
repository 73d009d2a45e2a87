"""The rollout side of the fleet: deployments, feedback and download sources.

Routes under ``/fleet/api/v1/``; the check-in asks ``RolloutActions`` (registered as the
fleet's ``action_source_key``) what each device should do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from distribution.keys import http_key, publish_key, runner_key, settings_key
from repository.http.setup import database

from .feedback_writer import FeedbackWriter
from .group_commit import group_commit_ctx
from .keys import action_source_key, app_store_key
from .rollout_actions import RolloutActions
from .rollout_api import rollout_routes
from .rollout_keys import (
    deployments_key,
    feedback_writer_key,
    rollout_actions_key,
    url_key_key,
    url_key_pusher_key,
)
from .rollout_store import DeploymentStore
from .rollout_url_key import FleetUrlKey, UrlKeyPusher


def setup_rollouts(app: web.Application) -> None:
    app.cleanup_ctx.append(_rollouts_ctx)
    app.router.add_routes(rollout_routes())


async def _rollouts_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    publish = app[publish_key]  # deployments' webhook events, through the service's one publish function
    store = DeploymentStore(app[database], publish)
    issuer = f"fleet@{settings.node_id}"
    app[url_key_key] = await asyncio.to_thread(FleetUrlKey.load_or_create, settings.fleet_url_key_path, issuer)
    actions = RolloutActions(app[database], store, publish)
    await actions.load()
    app[deployments_key] = store
    app[app_store_key].add_delete_check(store.refuse_if_used)
    app[rollout_actions_key] = actions
    app[action_source_key] = actions
    pusher = UrlKeyPusher(app[http_key], app[url_key_key], app[runner_key].edges, settings.edge_read_timeout)
    app[url_key_pusher_key] = pusher
    pusher.soon()  # a replica with a key of its own (its own data directory) makes the edges trust it
    writer = app[feedback_writer_key] = FeedbackWriter(app[database])
    writer.publish = publish
    async for _ in group_commit_ctx(writer):
        yield
    await pusher.close()
