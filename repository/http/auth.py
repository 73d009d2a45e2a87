"""Permission checks handlers call once the access pipeline has identified the caller.

A refusal is 401 when the caller has no identity (it may retry with one) and 403
when it has one without the permission. The rule that refused is left on the
request (``keys.denied_by``) for the audit trail.
"""

from __future__ import annotations

from aiohttp import web

from repository.catalog import Repo
from repository.errors import Forbidden, NotFound, Unauthorized
from repository.permissions import Action, Readable
from repository.tokens import Principal, Role

from . import keys


def require_role(request: web.Request, *roles: Role) -> Principal:
    """The caller, if it holds one of ``roles``: 401 for anonymous, 403 for the wrong role."""
    principal = request[keys.principal]
    if principal.role is None:
        request[keys.denied_by] = "authentication required"
        raise Unauthorized()
    if principal.role not in roles:
        request[keys.denied_by] = f"role {principal.role.value} is not {' or '.join(r.value for r in roles)}"
        raise Forbidden(f"Role '{principal.role.value}' may not do this")
    return principal


def _virtual(request: web.Request, key: str) -> Repo | None:
    """The virtual repo named ``key`` (which the node keeps apart from the catalog), as a repo;
    found without a coroutine, since every download asks before it asks the catalog."""
    virtual = request.app.get(keys.virtual_repos)
    if virtual is not None and (found := virtual.get(key)) is not None:
        return found.as_repo()
    return None


def cached_read(request: web.Request, repo: str, path: str = "") -> Repo | None:
    """What ``require_read`` answers, judged from the repos the node holds in memory (a download's
    usual case) without a coroutine; None when it holds none and ``require_read`` must ask."""
    found = _virtual(request, repo)
    if found is None:
        repos = request.app[keys.catalog].cached_repos()
        if repos is None:
            return None
        found = repos.get(repo)
    return _readable(request, found, path)


async def require_read(request: web.Request, repo: str, path: str = "") -> Repo:
    """The repo, if the caller may read ``path`` in it (see ``repository.permissions``).

    An unknown repo is a 404 for everyone, with the message clients expect.
    """
    found = cached_read(request, repo, path)
    if found is None:
        found = _readable(request, await request.app[keys.catalog].get_repo(repo), path)
    return found


def _readable(request: web.Request, found: Repo | None, path: str) -> Repo:
    if found is None:
        raise NotFound()
    _check(request, Action.read, found, path)
    return found


async def require_permission(request: web.Request, action: Action, repo: str, path: str) -> Principal:
    """The caller, if it may do ``action`` on ``path`` in ``repo``.

    An unknown repo is judged as one without anonymous reads, so the caller hears
    401/403 before learning whether the repo exists; the write itself then answers 404.
    """
    found = await request.app[keys.catalog].get_repo(repo) or Repo(repo, anonymous_read=False)
    return _check(request, action, found, path)


def may(request: web.Request, action: Action, repo: Repo, path: str) -> bool:
    """Whether the caller may, without refusing: for filtering listings."""
    return request.app[keys.permissions].decide(request[keys.principal], action, repo, path).allowed


def reader(request: web.Request) -> Readable:
    """What the caller may read, as a download would decide: for the calls that make existing
    bytes readable somewhere new (a checksum deploy, a bundle spec), which must not do so
    for bytes their caller may not read."""
    return lambda repo, path: may(request, Action.read, repo, path)


def _check(request: web.Request, action: Action, repo: Repo, path: str) -> Principal:
    principal = request[keys.principal]
    decision = request.app[keys.permissions].decide(principal, action, repo, path)
    if decision.allowed:
        return principal
    if action is Action.read and (signed := request.app.get(keys.signed_read)) is not None and signed(request):
        return principal
    request[keys.denied_by] = decision.rule
    if not principal.authenticated:
        raise Unauthorized()
    where = f"{repo.key}/{path}" if path else repo.key
    raise Forbidden(f"User '{principal.subject}' is not permitted to {_VERBS[action]} '{where}'")


_VERBS = {
    Action.read: "read",
    Action.write: "deploy to",
    Action.delete: "delete",
    Action.manage: "manage",
    Action.annotate: "annotate",
}
