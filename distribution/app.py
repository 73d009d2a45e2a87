"""The Distribution service's app factory: nothing is built or read at import time."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from repository.catalog import Repo
from repository.http import keys as core
from repository.http.metrics import metrics_middleware
from repository.http.middlewares import error_middleware, identity_middleware
from repository.http.request_ids import setup_request_ids
from repository.http.scrub_api import setup_scrub
from repository.http.setup import database, setup_artifact_core
from repository.policy import policy_for

from .bundle_store import BundleStore, ServiceBlobs
from .bundles import BundleService
from .edges import EdgeStore
from .jobs import JobStore
from .keys import bundles_key, http_key, runner_key, settings_key, signer_key
from .metrics import edge_traffic_key, setup_distribution_metrics
from .plugins import plugins
from .pull_api import setup_pull
from .routes import V1, setup_routes
from .runner import JobRunner
from .sboms import BundleSboms, SbomLimits
from .schema import distribution_migrations
from .settings import DistributionSettings
from .signing import Signer
from .webhook_setup import webhooks_ctx

# Bundle specs and release notes are JSON; artifact bodies stream and are not bound by this.
MAX_JSON_BODY = 4 * 1024 * 1024


def create_app(settings: DistributionSettings) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, identity_middleware],
        client_max_size=MAX_JSON_BODY,
    )
    app[settings_key] = settings
    setup_request_ids(app)
    setup_distribution_metrics(app, settings)
    setup_artifact_core(
        app,
        settings,
        policy_for(
            settings, writable_repos=None, builtin_repos=tuple(Repo(k, anonymous_read=False) for k in settings.repos)
        ),
        extra_migrations=(distribution_migrations, *(m for p in plugins() for m in p.migrations)),
    )
    setup_scrub(app, settings, "distribution", ServiceBlobs)
    app.cleanup_ctx.extend([signer_ctx, bundles_ctx, edge_client_ctx, runner_ctx, webhooks_ctx])
    setup_routes(app)
    setup_pull(app, V1)
    for plugin in plugins():
        plugin.setup_app(app)
    return app


async def signer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The GnuPG home with the signing keys; a key is made on first start. gpg-agents stop on shutdown."""
    settings = app[settings_key]
    signer = Signer(settings.gnupg_dir, settings.data_dir / "signing-keys.json")
    await asyncio.to_thread(signer.ensure_default_key, settings.signing_key_uid)
    app[signer_key] = signer
    yield
    await asyncio.to_thread(signer.close)


async def bundles_ctx(app: web.Application) -> AsyncIterator[None]:
    store = BundleStore(app[database])
    app[core.artifacts].pin_with(store.pinned)
    settings = app[settings_key]
    limits = SbomLimits(settings.sbom_max_bytes, settings.sbom_embedded_max_bytes)
    app[bundles_key] = BundleService(
        store,
        app[core.artifacts],
        app[signer_key],
        settings.max_bundle_artifacts,
        spool_dir=settings.data_dir,
        sboms=BundleSboms(store, app[core.artifacts].storage, limits),
    )
    yield


async def edge_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client session for every call to edges, closed on shutdown."""
    settings = app[settings_key]
    connector = aiohttp.TCPConnector(
        limit=settings.max_parallel_edges * (settings.max_parallel_blobs + 2) + 16,
        limit_per_host=settings.max_parallel_blobs + 4,
    )
    # each call sets its own read time-out; connecting never waits more than 5 s
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=settings.edge_read_timeout)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
    app[http_key] = session
    yield
    await session.close()


def replica_id(path: Path) -> str:
    """This replica's lasting name: made once, kept in its data directory, so that a replica
    restarted takes back at once the job leases it held (``JobRunner.run``)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        name = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(name + "\n")
        os.replace(temp, path)
        return name


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job runner: started with the service (unfinished jobs resume), cancelled and awaited on shutdown."""
    settings = app[settings_key]
    runner = JobRunner(
        JobStore(app[database], holder=await asyncio.to_thread(replica_id, settings.replica_id_path)),
        EdgeStore(app[database]),
        app[bundles_key],
        app[core.storage],
        app[http_key],
        app[settings_key],
        on_sent=app[edge_traffic_key].sent,
    )
    app[runner_key] = runner
    task = asyncio.create_task(runner.run(), name="distribution job runner")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await runner.close()
