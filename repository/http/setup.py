"""Wiring of the artifact core into a service's app: one cleanup context per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from cachetools import LRUCache
from sqlite_utils import Migrations

from repository.artifacts import ArtifactService
from repository.catalog import Catalog
from repository.db import Database
from repository.identity import Authenticator
from repository.permissions import Permissions
from repository.policy import ArtifactPolicy
from repository.quarantine import Quarantine
from repository.schema import catalog_migrations
from repository.settings import ServiceSettings
from repository.tokens import TokenStore
from storage_backends import create_backend

from . import keys

database = web.AppKey("database", Database)
SMALL_BLOB_CACHE_BYTES = 32 * 1024 * 1024


def setup_artifact_core(
    app: web.Application,
    settings: ServiceSettings,
    policy: ArtifactPolicy,
    *,
    extra_migrations: tuple[Migrations, ...] = (),
) -> None:
    """Open the catalog and the blob store at start-up, close them on shutdown."""
    database_target, data_dir = settings.database_target, settings.data_dir
    backend, backend_params = settings.storage.backend, settings.storage.backend_params(settings.data_dir)
    admin_token = settings.admin_token
    app[keys.policy] = policy
    # No permission targets until a node loads some: roles alone decide.
    app[keys.permissions] = Permissions()

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        db = Database(database_target, local_dir=data_dir)
        await db.open(catalog_migrations, *extra_migrations)
        app[database] = db
        app[keys.catalog] = Catalog(db)
        app[keys.tokens] = TokenStore(db)
        for repo in policy.builtin_repos:
            await app[keys.catalog].ensure_repo(repo, update=True)
        yield
        await db.close()

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        store = create_backend(backend, backend_params)
        await store.open()
        app[keys.storage] = store
        yield
        await store.close()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        quarantined = Quarantine(app[database])
        app[keys.artifacts] = ArtifactService(app[keys.catalog], app[keys.storage], policy, quarantined)
        app[keys.authenticator] = Authenticator(app[keys.tokens], admin_token)
        app[keys.small_blobs] = LRUCache(maxsize=SMALL_BLOB_CACHE_BYTES, getsizeof=len)
        yield

    app.cleanup_ctx.extend([database_ctx, storage_ctx, services_ctx])
