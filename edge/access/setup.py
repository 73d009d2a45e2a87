"""Wiring of users, permission targets and the audit trail into the edge app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from repository.http import keys as core
from repository.http.setup import database

from ..keys import audit_trail_key, permission_targets_key, settings_key, users_key
from .audit import AuditTrail
from .audit_store import AuditStore
from .context import access_context
from .targets import TargetStore
from .users import UserStore


def setup_security(app: web.Application) -> None:
    app.cleanup_ctx.extend([security_ctx, audit_ctx])
    app[core.signed_read] = has_verified_signed_url


def has_verified_signed_url(request: web.Request) -> bool:
    """The access step names the signed URL's key only once it verified the URL for this path."""
    ctx = request.get(access_context)
    return ctx is not None and ctx.signed_kid is not None


async def security_ctx(app: web.Application) -> AsyncIterator[None]:
    """Users and permission targets, loaded into memory; basic auth learns the users."""
    users = UserStore(app[database])
    await users.load()
    targets = TargetStore(app[database], app[core.permissions])
    await targets.load()
    app[users_key] = users
    app[permission_targets_key] = targets
    app[core.authenticator].users = users
    yield


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """The audit writer; on shutdown (after running requests finished) it writes what is queued."""
    settings = app[settings_key].audit
    store = AuditStore(app[database])
    trail = AuditTrail(
        store,
        enabled=settings.enabled,
        flush_interval=settings.flush_interval,
        retention_days=settings.retention_days,
    )
    app[audit_trail_key] = trail
    app[core.download_stats] = store
    app[core.artifacts].on_quarantine.append(trail.record_quarantine)
    trail.start()
    yield
    await trail.close()
