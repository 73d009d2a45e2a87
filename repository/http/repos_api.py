"""``PUT /artifactory/api/repositories/{key}``: create a local repo, Artifactory's way (admin only)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiohttp import web

from repository.catalog import Repo
from repository.errors import BadRequest, Conflict
from repository.tokens import Role
from wire.paths import check_repo_key

from . import keys
from .auth import require_role
from .json_body import read_json_object
from .responses import json_response

PACKAGE_TYPES = ("generic",)
_KEYS = {"key", "rclass", "packageType", "description", "anonymousRead"}


async def create_repository(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    key = check_repo_key(request.match_info["key"])
    return await create_local_repository(request, key, await read_json_object(request))


def check_repository_body(key: str, body: dict[str, Any], fields: Collection[str]) -> None:
    """What every kind of repo's configuration must be: only ``fields``, the URL's key, a known packageType."""
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in the repository configuration")
    if body.get("key", key) != key:
        raise BadRequest("'key' in the body differs from the key in the URL")
    if body.get("packageType", "generic") not in PACKAGE_TYPES:
        raise BadRequest(f"packageType must be one of {', '.join(PACKAGE_TYPES)}")


async def create_local_repository(request: web.Request, key: str, body: dict[str, Any]) -> web.Response:
    """The PUT of a local repo, its body read (a node with other kinds of repo reads it first)."""
    if body.get("rclass") == "remote":  # a well-formed request this node cannot take, not a bad one
        raise Conflict("This node holds local repositories only: remote repositories are configured on edges")
    check_repository_body(key, body, _KEYS)
    if body.get("rclass", "local") != "local":
        raise BadRequest('Only local repositories ("rclass": "local") can be created here')
    package_type = body.get("packageType", "generic")
    description = body.get("description", "")
    anonymous = body.get("anonymousRead", False)
    if not isinstance(description, str) or len(description) > 1024 or not isinstance(anonymous, bool):
        raise BadRequest("'description' must be a string and 'anonymousRead' true or false")
    wanted = Repo(key, package_type=package_type, description=description, anonymous_read=anonymous)
    repo = await request.app[keys.catalog].ensure_repo(wanted)
    if (repo.package_type, repo.description, repo.anonymous_read) != (package_type, description, anonymous):
        raise Conflict(f"Repository '{key}' already exists with another configuration")
    return json_response(
        {
            "key": repo.key,
            "rclass": "local",
            "packageType": repo.package_type,
            "description": repo.description,
            "anonymousRead": repo.anonymous_read,
        }
    )
