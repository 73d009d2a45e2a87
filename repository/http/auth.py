"""Permission checks handlers call once the access pipeline has identified the caller."""

from __future__ import annotations

from aiohttp import web

from repository.errors import Forbidden, Unauthorized
from repository.tokens import Principal, Role

from . import keys


def require_role(request: web.Request, *roles: Role) -> Principal:
    """The caller, if it holds one of ``roles``: 401 for anonymous, 403 for the wrong role."""
    principal = request[keys.principal]
    if not principal.authenticated:
        raise Unauthorized()
    if principal.role not in roles:
        raise Forbidden(f"Role '{principal.role.value}' may not do this")
    return principal


async def require_read(request: web.Request, repo: str) -> Principal:
    """Any token may read; anonymous only where the repo allows anonymous reads."""
    principal = request[keys.principal]
    if principal.authenticated:
        return principal
    found = await request.app[keys.catalog].get_repo(repo)
    if found is not None and not found.anonymous_read:
        raise Unauthorized()
    return principal
