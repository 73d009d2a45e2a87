"""``/artifactory/api/repositories/{key}`` for every kind of repo an edge has, and the statistics
endpoint upstreams of remote repos offer.

PUT, POST and DELETE of a repo read the body once and hand it to the local or the remote
handler by ``rclass`` (PUT) or by what the repo is (the others); GET is the artifact
API's, which asks ``keys.repo_configuration`` for a remote repo's configuration. Everything is
checked before anything is stored: a bad configuration is a 400 and changes nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from repository.catalog import Repo
from repository.errors import BadRequest, Conflict, NotFound, Unauthorized
from repository.http import keys as core
from repository.http.auth import require_read, require_role
from repository.http.json_body import read_json_object
from repository.http.repos_api import create_local_repository
from repository.http.responses import json_response
from repository.remote_source import REMOTE
from repository.tokens import ANONYMOUS, Role
from wire.paths import check_artifact_path, check_repo_key

from ..access.security_api import update_local_repository
from ..keys import audit_trail_key
from .config import REMOTE_FIELDS, RemoteConfig, parse_remote_config
from .keys import remote_repos_key
from .stats import MAX_BATCH, STATS_API

REPOSITORY = "/artifactory/api/repositories/{key}"
MAX_COUNT = 1_000_000_000


async def put_repository(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    key = check_repo_key(request.match_info["key"])
    body = await read_json_object(request)
    remotes = request.app[remote_repos_key]
    current = remotes.store.config(key)
    if body.get("rclass") != "remote":
        if current is not None:
            raise Conflict(f"Repository '{key}' already exists as a remote repository")
        return await create_local_repository(request, key, body)
    config = parse_remote_config(key, body)
    _refuse_self(request, config)
    existing = await request.app[core.catalog].get_repo(key)
    if existing is not None and (existing.type != REMOTE or (current is not None and current != config)):
        raise Conflict(f"Repository '{key}' already exists with another configuration")
    return await _save(request, config)


async def update_repository(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    key = request.match_info["key"]
    body = await read_json_object(request)
    current = request.app[remote_repos_key].store.config(key)
    if current is None:
        remote_only = sorted(set(body) & REMOTE_FIELDS)
        if remote_only:
            raise Conflict(f"Repository '{key}' is not a remote repository: '{remote_only[0]}' cannot be set on it")
        return await update_local_repository(request, key, body)
    if body.get("rclass", "remote") != "remote":
        raise Conflict(f"Repository '{key}' is a remote repository: its 'rclass' cannot be changed")
    config = parse_remote_config(key, body, current)
    _refuse_self(request, config)
    return await _save(request, config)


async def delete_repository(request: web.Request) -> web.Response:
    """Remove a remote repo with everything its cache holds (local repos hold bundles: not here)."""
    require_role(request, Role.admin)
    key = request.match_info["key"]
    remotes = request.app[remote_repos_key]
    if remotes.store.config(key) is None:
        if await request.app[core.catalog].get_repo(key) is None:
            raise NotFound(f"Repository '{key}' does not exist")
        raise Conflict(
            f"Repository '{key}' is a local repository: only virtual and remote repositories can be removed on an edge"
        )
    await remotes.remove_repo(key)
    await request.app[core.catalog].remove_repo(key)
    return web.Response(text=f"Repository '{key}' and all its content have been removed successfully.\n")


async def _save(request: web.Request, config: RemoteConfig) -> web.Response:
    repo = Repo(config.key, type=REMOTE, description=config.description, anonymous_read=config.anonymous_read)
    await request.app[core.catalog].ensure_repo(repo, update=True)
    await request.app[remote_repos_key].store.save(config)
    return json_response(config.answer())


def _refuse_self(request: web.Request, config: RemoteConfig) -> None:
    """An upstream URL that names this very node is a loop: refused when it can be seen from here
    (the port this request came in on, on a loopback address or the name it was asked by)."""
    target = urlsplit(config.url)
    own = request.transport.get_extra_info("sockname") if request.transport is not None else None
    port = target.port or (443 if target.scheme == "https" else 80)
    if not own or port != own[1]:
        return
    host = (target.hostname or "").lower()
    if host in ("localhost", request.host.rsplit(":", 1)[0].lower(), str(own[0])) or _loopback(host):
        raise BadRequest(
            f"'url' points at this node itself ({config.url}): a remote repository cannot be its own upstream"
        )


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


async def receive_statistics(request: web.Request) -> web.Response:
    """``POST /artifactory/api/downloads/statistics``: downloads a remote repo downstream served from
    its cache, added to this node's ``?stats``. The caller must be a user (not anonymous) who may
    read every file it names; the whole batch is checked before any count is added."""
    if request[core.principal] == ANONYMOUS:
        raise Unauthorized("Statistics are accepted from authenticated callers only")
    body = await read_json_object(request)
    entries = body.get("downloads")
    if set(body) != {"downloads"} or not isinstance(entries, list) or not 0 < len(entries) <= MAX_BATCH:
        raise BadRequest(f'The body must be {{"downloads": [...]}} with 1 to {MAX_BATCH} entries')
    counts: dict[tuple[str, str], list[Any]] = {}
    for entry in entries:
        repo, path, count, last, by = _stat_entry(entry)
        await require_read(request, repo, path)
        found = counts.setdefault((repo, path), [0, 0, ""])
        found[0] += count
        if last >= found[1]:
            found[1:] = [last, by]
    await request.app[audit_trail_key].store.add_downloads(counts)
    return web.Response(status=204)


def _stat_entry(entry: Any) -> tuple[str, str, int, int, str]:
    fields = {"repo", "path", "count", "lastDownloaded", "lastDownloadedBy"}
    if not isinstance(entry, dict) or set(entry) - fields or not {"repo", "path", "count"} <= set(entry):
        raise BadRequest(f"Each download must be an object with {', '.join(sorted(fields))}")
    repo, path, count = entry["repo"], entry["path"], entry["count"]
    last, by = entry.get("lastDownloaded", 0), entry.get("lastDownloadedBy", "")
    if not isinstance(repo, str) or not isinstance(path, str) or not isinstance(by, str) or len(by) > 256:
        raise BadRequest("'repo', 'path' and 'lastDownloadedBy' must be strings")
    for name, value, low in (("count", count, 1), ("lastDownloaded", last, 0)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not low <= value <= (MAX_COUNT if name == "count" else 2**62)
        ):
            raise BadRequest(f"'{name}' must be a whole number of at least {low}")
    check_repo_key(repo)
    check_artifact_path(path)
    return repo, path, count, last, by


def remote_routes() -> list[web.AbstractRouteDef]:
    """Before the artifact API's ``api/`` catch-all. The repository API's PUT, POST and DELETE reach
    the handlers here through the virtual repos' (edge/virtual_api.py), which hand on every other kind."""
    return [
        web.post("/artifactory/" + STATS_API, receive_statistics, name="download_statistics"),
    ]
