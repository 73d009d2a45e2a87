"""Artifactory's property calls: set, read, delete and update a file's properties, and search by them.

- ``PUT  /artifactory/api/storage/{repo}/{path}?properties=a=1;b=2|3[&recursive=0|1]``
- ``GET  /artifactory/api/storage/{repo}/{path}?properties[=a,b]`` (in ``storage_api``)
- ``DELETE /artifactory/api/storage/{repo}/{path}?properties=a,b[&recursive=0|1]``
- ``PATCH /artifactory/api/metadata/{repo}/{path}?recursive=0|1`` with ``{"props": {"a": "1",
  "b": ["2", "3"], "c": null}}``: what dohq-artifactory's ``set_properties``,
  ``del_properties`` and ``properties = ...`` send (null removes a key)
- ``GET  /artifactory/api/search/prop?a=1,2&b=3[&repos=x,y]``: files with, for each key,
  one of its values

Changing properties is a write: the node's policy is asked first (an edge refuses every
repo but its uploads repo with 403), then the caller needs the ``annotate`` permission.
A folder's properties are its files': ``recursive=1`` (the default) changes every file
below it, and ``recursive=0`` on a folder is refused, since folders hold none of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, NotFound
from repository.paths import url_quote
from repository.permissions import Action
from repository.property_store import PropertyChange, PropertyStore
from repository.property_syntax import (
    PropertySyntaxError,
    check_properties,
    decode_query,
    parse_keys,
    parse_properties,
    parse_values,
    query_pairs,
)

from . import keys
from .auth import may, require_permission
from .download import artifact_location
from .json_body import read_json_object
from .storage_api import STORAGE_PREFIX, base_url

METADATA_PREFIX = "/artifactory/api/metadata/"
MAX_METADATA_BODY = 1024 * 1024


async def set_properties(request: web.Request) -> web.Response:
    text = _required_properties(request)
    repo, path = await _annotatable(request, STORAGE_PREFIX)
    change = PropertyChange(put=parse_properties(text))
    await _apply(request, repo, path, change)
    return web.Response(status=204)


async def delete_properties(request: web.Request) -> web.Response:
    text = _required_properties(request)
    repo, path = await _annotatable(request, STORAGE_PREFIX)
    await _apply(request, repo, path, PropertyChange(remove=tuple(parse_keys(text))))
    return web.Response(status=204)


async def update_metadata(request: web.Request) -> web.Response:
    repo, path = await _annotatable(request, METADATA_PREFIX)
    body = await read_json_object(request, limit=MAX_METADATA_BODY)
    await _apply(request, repo, path, PropertyChange(put=_metadata_props(body)))
    return web.Response(status=204)


async def search_by_property(request: web.Request) -> web.StreamResponse:
    """Artifactory's property search, streamed; files the caller may not read are left out.
    No property asked for selects no file (``PropertyStore.search``)."""
    criteria: dict[str, list[str]] = {}
    repos: list[str] | None = None
    for name, value in query_pairs(request.rel_url.raw_query_string):
        if name == "repos":
            repos = [r for r in value.split(",") if r]
        else:
            criteria.setdefault(name, []).extend(parse_values(value))
    check_properties(criteria)
    detail = "properties" in request.headers.get("X-Result-Detail", "")
    catalog = request.app[keys.catalog]
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"results": [')
    first = True
    async for artifact in PropertyStore(catalog).search(criteria, repos):
        found = await catalog.get_repo(artifact.repo)
        if found is None or not may(request, Action.read, found, artifact.path):
            continue
        entry: dict[str, Any] = {"uri": f"{base_url(request)}/api/storage/{artifact.repo}/{url_quote(artifact.path)}"}
        if detail:
            entry["properties"] = artifact.properties
        await response.write((b"" if first else b",") + json.dumps(entry).encode())
        first = False
    await response.write(b"]}\n")
    await response.write_eof()
    return response


# -- helpers -------------------------------------------------------------------------


def _required_properties(request: web.Request) -> str:
    text = decode_query(request.rel_url.raw_query_string, "properties")
    if text is None:
        raise BadRequest("The 'properties' parameter is required, e.g. ?properties=a=1;b=2")
    return text


async def _annotatable(request: web.Request, prefix: str) -> tuple[str, str]:
    """The item's repo and path, once the node and the caller allow changing its properties."""
    repo, path = artifact_location(request, prefix)
    request.app[keys.policy].check_writable(repo)
    await require_permission(request, Action.annotate, repo, path)
    if await request.app[keys.catalog].get_repo(repo) is None:
        raise NotFound()
    return repo, path


async def _apply(request: web.Request, repo: str, path: str, change: PropertyChange) -> None:
    recursive = request.query.get("recursive", "1")
    if recursive not in ("0", "1"):
        raise BadRequest("'recursive' must be 0 or 1")
    await PropertyStore(request.app[keys.catalog]).change(repo, path, change, recursive=recursive == "1")


def _metadata_props(body: Mapping[str, Any]) -> dict[str, list[str] | None]:
    unknown = sorted(set(body) - {"props"})
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}': the body is {{\"props\": {{...}}}}")
    props = body.get("props")
    if not isinstance(props, dict):
        raise BadRequest('Request body must look like {"props": {"key": "value" | ["values"] | null}}')
    put: dict[str, list[str] | None] = {}
    for key, value in props.items():
        if value is None:
            put[key] = None
        elif isinstance(value, str):
            put[key] = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            put[key] = value
        else:
            raise PropertySyntaxError(f"props[{key!r}]: must be a string, a list of strings or null")
    check_properties({k: v or [] for k, v in put.items()})
    return put
