"""Wiring of virtual repos into the edge app: the store, the access rules each member applies,
and the refusal of bundles whose files would land under a virtual repo's key."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from repository.http import keys as core
from repository.http.setup import database

from .access.context import access_context
from .access.middleware import access_control
from .keys import transactions_key, virtual_repos_key
from .virtual_repos import VirtualRepoStore


def setup_virtual_repos(app: web.Application) -> None:
    app.cleanup_ctx.append(virtual_repos_ctx)
    app[core.member_admits] = member_admits


async def virtual_repos_ctx(app: web.Application) -> AsyncIterator[None]:
    store = VirtualRepoStore(app[database])
    await store.load()
    app[virtual_repos_key] = store
    app[core.virtual_repos] = store
    app[transactions_key].is_virtual = store.get
    yield


def member_admits(request: web.Request, member: str) -> bool:
    """Whether the IP and geo rules of ``member`` admit the request, as they would a direct
    download from it (the access step already judged the virtual repo's own)."""
    rules = request.app[access_control].rules.current
    if not rules:
        return True
    ctx = request[access_context]
    return rules.check(member, ctx.client_ip, ctx.country) is None
