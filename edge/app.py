"""The edge node's app factory: nothing is built or read at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from repository.catalog import Repo
from repository.http import keys as core
from repository.http.metrics_shared import setup_shared_metrics
from repository.http.scrub_api import setup_scrub
from repository.http.setup import database, setup_artifact_core
from repository.policy import EDGE_UPLOADS_REPO, policy_for
from repository.scrub_store import CatalogBlobs

from .access.middleware import access_ctx
from .access.setup import setup_security
from .keys import settings_key, starts_node_key, transactions_key, trusted_keys_key, worker_key
from .metrics import setup_edge_metrics
from .pace import UploadPace
from .pipeline import setup_pipeline
from .raw_body import Receivers
from .requests import setup_requests
from .routes import setup_routes
from .schema import edge_migrations
from .settings import EdgeSettings
from .shared_staging import staging_for
from .staging import Staging
from .store import EdgeStore
from .transactions import Transactions
from .trust import TrustedKeys
from .virtual_setup import setup_virtual_repos

# JSON bodies on an edge are small (tokens, keys); artifact bodies and transaction
# starts (manifests of many MiB) are read with their own bounds.
MAX_JSON_BODY = 1024 * 1024
# How often abandoned transactions are looked for, at most.
EXPIRY_INTERVAL = 60.0


def create_app(settings: EdgeSettings, *, worker: int = 0, starts_node: bool = True) -> web.Application:
    """The edge's app; ``worker`` (from 1) when it is one of several processes serving the port
    (edge/workers.py), of which only the first to start ``starts_node``."""
    app = web.Application(client_max_size=MAX_JSON_BODY)
    setup_pipeline(app)
    app[settings_key] = settings
    app[worker_key] = worker
    app[starts_node_key] = starts_node
    setup_requests(app, worker)
    setup_edge_metrics(app, settings)
    if worker:  # a scrape reaching any worker answers for the node
        setup_shared_metrics(app, settings.data_dir / "metrics", worker, starts_node=starts_node)
    uploads = Repo(EDGE_UPLOADS_REPO, anonymous_read=settings.uploads_anonymous_read)
    setup_artifact_core(
        app,
        settings,
        policy_for(
            settings,
            writable_repos=frozenset({EDGE_UPLOADS_REPO}),
            builtin_repos=(uploads,),
            accel_redirect=settings.accel_redirect,
        ),
        extra_migrations=(edge_migrations,),
    )
    setup_scrub(app, settings, "edge", CatalogBlobs)
    app.cleanup_ctx.extend([trust_ctx, transactions_ctx])
    app.cleanup_ctx.append(access_ctx)
    setup_security(app)
    setup_virtual_repos(app)
    setup_routes(app)
    return app


async def trust_ctx(app: web.Application) -> AsyncIterator[None]:
    """The GnuPG home of trusted keys; closed (its gpg daemons stopped) on shutdown."""
    trusted = await TrustedKeys.open(app[settings_key].trusted_keys_dir, EdgeStore(app[database]))
    app[trusted_keys_key] = trusted
    yield
    await trusted.close()


async def transactions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Distribution transactions: staging left by transactions no longer open is removed at
    start; a background task expires abandoned ones, and is cancelled and awaited on shutdown."""
    settings = app[settings_key]
    store = EdgeStore(app[database])
    app[core.artifacts].pin_with(store.pinned)
    transactions = Transactions(
        store,
        app[trusted_keys_key],
        app[core.artifacts],
        staging_for(Staging(settings.staging_dir), app[core.artifacts].storage, app[database]),
        settings.transaction_ttl,
        Receivers(),
        UploadPace(settings.upload_min_rate, settings.upload_rate_window, settings.upload_deadline),
        settings.removal_files_per_request,
    )
    await transactions.recover(sweep_staging=app[starts_node_key])
    app[transactions_key] = transactions
    interval = min(EXPIRY_INTERVAL, max(settings.transaction_ttl / 4, 1.0))
    task = asyncio.create_task(transactions.expire_forever(interval), name="expire-transactions")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.to_thread(transactions.receivers.close)  # every upload has ended by now
