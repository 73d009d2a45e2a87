"""The edge node's app factory: nothing is built or read at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from repository.catalog import Repo
from repository.console.schema import console_migrations
from repository.http import keys as core
from repository.http.metrics_shared import setup_shared_metrics
from repository.http.scrub_api import setup_scrub
from repository.http.setup import database, setup_artifact_core
from repository.policy import EDGE_UPLOADS_REPO, policy_for
from repository.scrub_store import CatalogBlobs

from .access.middleware import access_ctx
from .access.setup import setup_security
from .console.routes import setup_edge_console
from .dispatch import setup_dispatch
from .keys import relayer_key, settings_key, starts_node_key, transactions_key, trusted_keys_key, worker_key
from .metrics import setup_edge_metrics
from .pace import UploadPace
from .pipeline import setup_pipeline
from .pull_client import ServiceClient
from .puller import Puller
from .raw_body import Receivers
from .relay_store import RelayStore
from .relaying import Relayer
from .remote.setup import setup_remote_repos
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
    setup_dispatch(app)
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
        extra_migrations=(edge_migrations, console_migrations),
    )
    setup_scrub(app, settings, "edge", CatalogBlobs)
    app.cleanup_ctx.extend([trust_ctx, transactions_ctx, relays_ctx])
    app.cleanup_ctx.append(access_ctx)
    if settings.pull.enabled:
        app.cleanup_ctx.append(pull_ctx)
    setup_security(app)
    setup_virtual_repos(app)
    setup_remote_repos(app)  # its repository routes go before the security API's
    setup_routes(app)
    setup_edge_console(app, settings)
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


async def pull_ctx(app: web.Application) -> AsyncIterator[None]:
    """Pull mode (edge/puller.py): the poller runs in every worker, and polls in the one holding
    its lease; cancelled and awaited on shutdown, its HTTP session closed."""
    settings = app[settings_key].pull
    credential = settings.read_credential()  # a bad file stops the start, naming the setting
    session = aiohttp.ClientSession(trust_env=False)
    client = ServiceClient(session, settings.service_url, credential)
    puller = Puller(client, app[transactions_key], app[database], settings)
    task = asyncio.create_task(puller.run_forever(), name="pull")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()


async def relays_ctx(app: web.Application) -> AsyncIterator[None]:
    """Relays to child edges (edge/relaying.py): run by the process that started the node, which
    takes up every relay still RUNNING; its tasks are cancelled and awaited on shutdown."""
    transactions = app[transactions_key]

    async def published(tx_id: str) -> str:
        return (await transactions.published(await transactions.get(tx_id))).sha256

    async with aiohttp.ClientSession() as session:
        relayer = Relayer(
            RelayStore(app[database]), transactions.store, app[core.artifacts].storage, published, session
        )
        app[relayer_key] = relayer
        task = asyncio.create_task(relayer.run_forever(), name="relays") if app[starts_node_key] else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
