"""Permission checks handlers call once the access pipeline has identified the caller."""

from __future__ import annotations

from aiohttp import web

from repository.catalog import Repo
from repository.errors import Forbidden, NotFound, Unauthorized
from repository.tokens import Principal, Role

from . import keys


def require_role(request: web.Request, *roles: Role) -> Principal:
    """The caller, if it holds one of ``roles``: 401 for anonymous, 403 for the wrong role."""
    principal = request[keys.principal]
    if principal.role is None:
        raise Unauthorized()
    if principal.role not in roles:
        raise Forbidden(f"Role '{principal.role.value}' may not do this")
    return principal


async def require_read(request: web.Request, repo: str) -> Repo:
    """The repo, if the caller may read it: any token may; anonymous only where the repo allows.

    An unknown repo is a 404 for everyone, with the message clients expect.
    """
    principal = request[keys.principal]
    found = await request.app[keys.catalog].get_repo(repo)
    if found is None:
        raise NotFound()
    if not principal.authenticated and not found.anonymous_read:
        raise Unauthorized()
    return found
