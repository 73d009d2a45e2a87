"""Wiring of smart remote repos into an edge's app: routes, the service, its background report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from repository.http import keys as core
from repository.http.setup import database

from ..keys import settings_key
from .api import remote_routes
from .keys import remote_repos_key
from .service import RemoteRepos
from .store import RemoteStore
from .upstream import Upstream


def setup_remote_repos(app: web.Application) -> None:
    app.router.add_routes(remote_routes())
    app.cleanup_ctx.append(remote_repos_ctx)


async def remote_repos_ctx(app: web.Application) -> AsyncIterator[None]:
    """The remote repos' configurations and upstream client; uses and statistics are written every
    ``remote_stats_interval`` seconds and once more on shutdown."""
    settings = app[settings_key]
    store = RemoteStore(app[database])
    await store.load()
    upstream = Upstream(settings.node_id, settings.remote_connect_timeout)
    remotes = RemoteRepos(
        store,
        app[core.artifacts],
        upstream,
        max_bytes=settings.remote_cache_max_bytes,
        fetch_deadline=settings.remote_fetch_deadline,
    )
    app[remote_repos_key] = remotes
    app[core.remote_repos] = remotes
    task = asyncio.create_task(remotes.report_forever(settings.remote_stats_interval), name="remote-repos-report")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await store.flush_uses()
        await remotes.hits.report(upstream)
    await upstream.close()
