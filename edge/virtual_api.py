"""Virtual repos over Artifactory's repository API on an edge (admin only).

``PUT /artifactory/api/repositories/{key}`` with ``"rclass": "virtual"`` creates one (the same
configuration again is the same success; another one is a 409), POST changes its members,
description or anonymous read, DELETE removes it (never a member's content). Every other
repo's PUT, POST and DELETE go on to the handlers of local and remote repos
(edge/remote/api.py). A refused change stores nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.errors import BadRequest, Conflict, NotFound
from repository.http import keys as core
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.remote_source import REMOTE
from repository.tokens import Role
from repository.virtual import VirtualConfigError, VirtualRepo, check_members
from wire.paths import check_repo_key

from .keys import virtual_repos_key
from .remote import api as by_kind

_FIELDS = frozenset({"key", "rclass", "packageType", "description", "anonymousRead", "repositories"})


async def put_repository(request: web.Request) -> web.Response:
    """Create a virtual repo, or hand a local repo's PUT on (a key is one or the other)."""
    require_role(request, Role.admin)
    key = check_repo_key(request.match_info["key"])
    body = await read_json_object(request)  # read once: the local handler reads the same cached body
    store = request.app[virtual_repos_key]
    if body.get("rclass") != "virtual":
        if store.get(key) is not None:
            raise Conflict(f"Repository '{key}' already exists as a virtual repository")
        return await by_kind.put_repository(request)
    held = await request.app[core.catalog].get_repo(key)
    if held is not None:
        kind = "remote" if held.type == REMOTE else "local"
        raise Conflict(f"Repository '{key}' already exists as a {kind} repository")
    wanted = await _configured(request, key, body, None)
    existing = store.get(key)
    if existing is not None:
        if _settings(existing) != _settings(wanted):
            raise Conflict(f"Repository '{key}' already exists with another configuration")
        return json_response(existing.json())
    return json_response((await store.put(wanted)).json(), status=201)


async def post_repository(request: web.Request) -> web.Response:
    """Update a virtual repo (fields left out keep their values), or hand a local repo's POST on."""
    require_role(request, Role.admin)
    key = request.match_info["key"]
    store = request.app[virtual_repos_key]
    existing = store.get(key)
    if existing is None:
        body = await read_json_object(request)  # read once: the local handler reads the same cached body
        if body.get("rclass") == "virtual" or "repositories" in body:
            held = await request.app[core.catalog].get_repo(key)
            if held is not None:
                kind = "remote" if held.type == REMOTE else "local"
                raise Conflict(f"'{key}' is a {kind} repository: it has no members and cannot become virtual")
            raise NotFound(f"Repository '{key}' does not exist")
        return await by_kind.update_repository(request)
    wanted = await _configured(request, key, await read_json_object(request), existing)
    return json_response((await store.put(wanted)).json())


async def delete_repository(request: web.Request) -> web.Response:
    """Remove a virtual repo; one that another virtual repo lists is refused with 409 (remove it
    from that list first). Local repos hold distributed bundles and are not removed here (409)."""
    require_role(request, Role.admin)
    key = request.match_info["key"]
    store = request.app[virtual_repos_key]
    if store.get(key) is None:
        return await by_kind.delete_repository(request)
    listing = store.listing(key)
    if listing:
        raise Conflict(
            f"Repository '{key}' is a member of {', '.join(repr(k) for k in listing)}; remove it there first"
        )
    await store.delete(key)
    return web.Response(text=f"Virtual repository '{key}' has been removed; its members keep their content.\n")


async def _configured(
    request: web.Request, key: str, body: dict[str, Any], previous: VirtualRepo | None
) -> VirtualRepo:
    """The virtual repo ``body`` asks for (over ``previous``'s values), or a 400 saying why not."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in the repository configuration")
    for name, current in (("key", key), ("rclass", "virtual"), ("packageType", "generic")):
        if body.get(name, current) != current:
            raise BadRequest(f"'{name}' must be {current!r}")
    description = body.get("description", previous.description if previous else "")
    anonymous = body.get("anonymousRead", previous.anonymous_read if previous else False)
    if not isinstance(description, str) or len(description) > 1024 or not isinstance(anonymous, bool):
        raise BadRequest("'description' must be a string and 'anonymousRead' true or false")
    local = {r.key for r in await request.app[core.catalog].list_repos()}
    store = request.app[virtual_repos_key]
    try:
        members = check_members(
            key, body.get("repositories", list(previous.members) if previous else []), exists=local.__contains__,
            lookup=store.get,
        )  # fmt: skip
    except VirtualConfigError as exc:
        raise BadRequest(str(exc)) from None
    return VirtualRepo(key, members, description, anonymous)


async def _is_local(request: web.Request, key: str) -> bool:
    return await request.app[core.catalog].get_repo(key) is not None


def _settings(repo: VirtualRepo) -> tuple[object, ...]:
    return repo.members, repo.description, repo.anonymous_read


def virtual_repo_routes() -> list[web.AbstractRouteDef]:
    """PUT and POST of every repo key come here first; before the artifact API's ``api/`` catch-all."""
    path = "/artifactory/api/repositories/{key}"
    return [
        web.put(path, put_repository, name="repository_create"),
        web.post(path, post_repository, name="repository_update"),
        web.delete(path, delete_repository, name="repository_delete"),
    ]
