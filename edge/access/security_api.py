"""Users, permission targets and per-repo anonymous read over Artifactory's API (admin only).

``/artifactory/api/security/users[/{name}]``: PUT creates or replaces, POST updates
the fields given, GET, DELETE (which also revokes the user's tokens).
``/artifactory/api/v2/security/permissions[/{name}]``: PUT creates or replaces,
POST creates, GET, DELETE.
``/artifactory/api/repositories/{key}``: PUT creates a repo ahead of its first bundle, POST
changes its anonymous read (both routed by edge/virtual_api.py, which keeps virtual repos).
"""

from __future__ import annotations

from dataclasses import replace as dc_replace
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, Conflict, NotFound
from repository.http import keys as core
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.http.storage_api import base_url
from repository.tokens import Role
from wire.timestamps import iso

from ..keys import permission_targets_key, users_key
from .audit_api import audit_query
from .targets import TargetError, check_target_name, parse_target, target_json
from .users import User, UserError, check_name

# Artifactory fields that say nothing on an edge (no UI, no other realms): accepted, not kept.
IGNORED_USER_FIELDS = frozenset(
    {"profileUpdatable", "disableUIAccess", "internalPasswordDisabled", "watchManager", "policyManager", "realm"}
)
USER_FIELDS = frozenset({"name", "email", "password", "admin", "role", "groups"}) | IGNORED_USER_FIELDS


def user_json(request: web.Request, user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "uri": f"{base_url(request)}/api/security/users/{user.name}",
        "email": user.email,
        "admin": user.role is Role.admin,
        "role": user.role.value,
        "groups": list(user.groups),
        "realm": "internal",
        "created": iso(user.created),
        "lastUpdated": iso(user.modified),
    }


def _user_fields(body: dict[str, Any], name: str, previous: User | None) -> dict[str, Any]:
    """Role, email, groups and password from a body; absent fields keep ``previous``'s values."""
    unknown = sorted(set(body) - USER_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in the user")
    for ignored in IGNORED_USER_FIELDS & set(body):  # not kept, but still what Artifactory says they are
        if not isinstance(body[ignored], str if ignored == "realm" else bool):
            raise BadRequest(f"'{ignored}' must be {'a string' if ignored == 'realm' else 'true or false'}")
    if body.get("name", name) != name:
        raise BadRequest("'name' in the body differs from the name in the URL")
    role_name = body.get("role", previous.role.value if previous else Role.reader.value)
    admin = body.get("admin")
    if "admin" in body and not isinstance(admin, bool):
        raise BadRequest("'admin' must be true or false")
    if admin is True and "role" not in body:
        role_name = Role.admin.value
    elif admin is False and role_name == Role.admin.value and "role" not in body:
        role_name = Role.reader.value
    if not isinstance(role_name, str) or role_name not in Role.__members__:
        raise BadRequest(f"Unknown role {role_name!r}; expected one of {', '.join(Role.__members__)}")
    if admin is not None and admin != (role_name == Role.admin.value):
        raise BadRequest("'admin' and 'role' disagree")
    email = body.get("email", previous.email if previous else "")
    if not isinstance(email, str) or len(email) > 256:
        raise BadRequest("'email' must be a string of at most 256 characters")
    groups = body.get("groups", list(previous.groups) if previous else [])
    if not isinstance(groups, list) or len(groups) > 100 or not all(isinstance(g, str) for g in groups):
        raise BadRequest("'groups' must be a list of at most 100 group names")
    password = body.get("password")
    if "password" in body and not isinstance(password, str):
        raise BadRequest("'password' must be a string")
    return {"role": Role(role_name), "email": email, "groups": tuple(groups), "password": password}


async def put_user(request: web.Request) -> web.Response:
    """Create or replace: fields left out take their defaults (a password left out is kept)."""
    require_role(request, Role.admin)
    name = _user_name(request)
    body = await read_json_object(request)
    fields = _user_fields(body, name, None)
    try:
        user, created = await request.app[users_key].put(name, **fields)
    except UserError as exc:
        raise BadRequest(str(exc)) from None
    return json_response(user_json(request, user), status=201 if created else 200)


async def update_user(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name = _user_name(request)
    users = request.app[users_key]
    previous = users.get(name)
    if previous is None:
        raise NotFound(f"User '{name}' does not exist")
    fields = _user_fields(await read_json_object(request), name, previous)
    try:
        user, _ = await users.put(name, **fields)
    except UserError as exc:
        raise BadRequest(str(exc)) from None
    return json_response(user_json(request, user))


async def get_user(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    user = request.app[users_key].get(request.match_info["name"])
    if user is None:
        raise NotFound(f"User '{request.match_info['name']}' does not exist")
    return json_response(user_json(request, user))


async def list_users(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    base = base_url(request)
    users = request.app[users_key].list()
    return json_response(
        [{"name": u.name, "uri": f"{base}/api/security/users/{u.name}", "realm": "internal"} for u in users]
    )


async def delete_user(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name = request.match_info["name"]
    # tokens first: a failure in between leaves a user without tokens, never tokens without a user
    if request.app[users_key].get(name) is None:
        raise NotFound(f"User '{name}' does not exist")
    await request.app[core.tokens].revoke_subject(name)
    await request.app[users_key].delete(name)
    return web.Response(text=f"User '{name}' has been removed successfully.\n")


def _user_name(request: web.Request) -> str:
    try:
        return check_name(request.match_info["name"])
    except UserError as exc:
        raise BadRequest(str(exc)) from None


# -- permission targets ---------------------------------------------------------------


async def put_target(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return await _store_target(request, replace=True)


async def create_target(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return await _store_target(request, replace=False)


async def _store_target(request: web.Request, *, replace: bool) -> web.Response:
    name = request.match_info["name"]
    body = await read_json_object(request)
    store = request.app[permission_targets_key]
    try:
        target = parse_target(name, body)
    except TargetError as exc:
        raise BadRequest(str(exc)) from None
    if not replace and store.get(name) is not None:
        raise Conflict(f"Permission target '{name}' already exists")
    created = await store.put(target)
    return json_response(target_json(target), status=201 if created else 200)


async def get_target(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    target = request.app[permission_targets_key].get(request.match_info["name"])
    if target is None:
        raise NotFound(f"Permission target '{request.match_info['name']}' does not exist")
    return json_response(target_json(target))


async def list_targets(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    base = base_url(request)
    targets = sorted(request.app[permission_targets_key].permissions.targets, key=lambda t: t.name)
    return json_response([{"name": t.name, "uri": f"{base}/api/v2/security/permissions/{t.name}"} for t in targets])


async def delete_target(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name = request.match_info["name"]
    try:
        check_target_name(name)
    except TargetError as exc:
        raise BadRequest(str(exc)) from None
    if not await request.app[permission_targets_key].delete(name):
        raise NotFound(f"Permission target '{name}' does not exist")
    return web.Response(text=f"Permission Target '{name}' has been removed successfully.\n")


# -- anonymous read per repo -----------------------------------------------------------


async def update_repository(request: web.Request) -> web.Response:
    """``POST /artifactory/api/repositories/{key}`` (Artifactory's update): ``anonymousRead`` and
    ``description`` of a repo. A repo can also be made beforehand with PUT, so that the first
    bundle to land in it is not public for a moment; bundles keep what they find."""
    require_role(request, Role.admin)
    key = request.match_info["key"]
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"key", "rclass", "packageType", "description", "anonymousRead"})
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in the repository configuration")
    catalog = request.app[core.catalog]
    repo = await catalog.get_repo(key)
    if repo is None:
        raise NotFound(f"Repository '{key}' does not exist")
    if any(r.key == key for r in request.app[core.policy].builtin_repos):
        raise Conflict(f"'{key}' is configured by the node's settings (uploads_anonymous_read)")
    anonymous = body.get("anonymousRead", repo.anonymous_read)
    description = body.get("description", repo.description)
    if not isinstance(anonymous, bool) or not isinstance(description, str) or len(description) > 1024:
        raise BadRequest("'anonymousRead' must be true or false and 'description' a string")
    for name, current in (("key", key), ("rclass", "local"), ("packageType", repo.package_type)):
        if body.get(name, current) != current:
            raise BadRequest(f"'{name}' of a repository cannot be changed")
    updated = await catalog.ensure_repo(
        dc_replace(repo, anonymous_read=anonymous, description=description), update=True
    )
    return json_response(
        {
            "key": updated.key,
            "rclass": "local",
            "packageType": updated.package_type,
            "description": updated.description,
            "anonymousRead": updated.anonymous_read,
        }
    )


def security_routes() -> list[web.AbstractRouteDef]:
    """Users, permission targets and the audit trail; before the artifact API's ``api/`` catch-all."""
    users = "/artifactory/api/security/users"
    targets = "/artifactory/api/v2/security/permissions"
    return [
        web.get(users, list_users, name="user_list", allow_head=False),
        web.get(users + "/{name}", get_user, name="user_get", allow_head=False),
        web.put(users + "/{name}", put_user, name="user_put"),
        web.post(users + "/{name}", update_user, name="user_update"),
        web.delete(users + "/{name}", delete_user, name="user_delete"),
        web.get(targets, list_targets, name="permission_list", allow_head=False),
        web.get(targets + "/{name}", get_target, name="permission_get", allow_head=False),
        web.put(targets + "/{name}", put_target, name="permission_put"),
        web.post(targets + "/{name}", create_target, name="permission_create"),
        web.delete(targets + "/{name}", delete_target, name="permission_delete"),
        web.get("/artifactory/api/audit", audit_query, name="audit_query", allow_head=False),
    ]
