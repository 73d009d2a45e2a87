"""``/artifactory/api/storage/{repo}/{path}``: file info, folder info, deep listings, statistics.

Field names and types follow what JFrog CLI and dohq-artifactory parse: ``size``
is a string in file info, folders have no ``size``, ``folder`` is a boolean. A child's
or a listed file's ``uri`` is its name (path) as is, not percent-encoded, as Artifactory
answers it: clients join it to the folder's path and encode the result themselves, so an
encoded name would be encoded twice. Every ``uri`` and ``downloadUri`` that is a URL is encoded.
Where permission targets cover parts of a repo, listings leave out what the
caller may not read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from repository.catalog import Artifact, Folder
from repository.errors import BadRequest, NotFound
from repository.paths import url_quote
from repository.property_syntax import decode_query, parse_keys
from repository.remote_source import REMOTE
from repository.stats import DownloadStats
from wire.timestamps import iso

from . import keys, virtual_resolve
from .auth import require_read
from .download import artifact_location
from .listings import visible_files
from .responses import json_response
from .virtual_resolve import virtual_repo

STORAGE_PREFIX = "/artifactory/api/storage/"


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/artifactory"


def _slash(path: str) -> str:
    return "/" + path


def file_info(request: web.Request, a: Artifact) -> dict[str, Any]:
    base = base_url(request)
    checksums = {"sha1": a.sha1, "md5": a.md5, "sha256": a.sha256}
    return {
        "repo": a.repo,
        "path": _slash(a.path),
        "created": iso(a.created),
        "createdBy": a.created_by,
        "lastModified": iso(a.modified),
        "modifiedBy": a.modified_by,
        "lastUpdated": iso(a.modified),
        "downloadUri": f"{base}/{a.repo}/{url_quote(a.path)}",
        "mimeType": a.mime_type,
        "size": str(a.size),
        "checksums": checksums,
        "originalChecksums": dict(checksums),
        "uri": f"{base}/api/storage/{a.repo}/{url_quote(a.path)}",
    }


def _walk(request: web.Request, folder: Folder) -> AsyncIterator[Artifact]:
    """Every file below the folder the caller may see, in path order (over its members, in a virtual repo)."""
    virtual = virtual_repo(request, folder.repo)
    if virtual is not None:
        return virtual_resolve.walk_files(request, virtual, folder.path)
    return visible_files(request, folder.repo, folder.path)


async def folder_info(request: web.Request, f: Folder) -> dict[str, Any]:
    listing = await virtual_resolve.listing(request, f.repo, f.path)
    children = [{"uri": "/" + c.path.rpartition("/")[2], "folder": True} for c in listing.folders]
    children += [{"uri": "/" + a.name, "folder": False} for a in listing.files]
    uri_path = f"/{url_quote(f.path)}" if f.path else ""
    return {
        "repo": f.repo,
        "path": _slash(f.path),
        "created": iso(f.created),
        "createdBy": f.created_by,
        "lastModified": iso(f.created),
        "modifiedBy": f.created_by,
        "lastUpdated": iso(f.created),
        "children": children,
        "uri": f"{base_url(request)}/api/storage/{f.repo}{uri_path}",
    }


async def storage_info(request: web.Request) -> web.StreamResponse:
    repo, path = artifact_location(request, STORAGE_PREFIX)
    deep, with_folders = _flag(request, "deep"), _flag(request, "listFolders")
    found = await require_read(request, repo, path)
    remote = request.app.get(keys.remote_repos)
    if found.type == REMOTE and remote is not None and not {"stats", "properties"} & set(request.query):
        answer = await remote.listing(request, found, path)
        if answer is not None:
            return answer
    item = await virtual_resolve.item_at(request, repo, path)
    if "stats" in request.query:
        return await _stats(request, item)
    if "list" in request.query:
        if not isinstance(item, Folder):
            raise NotFound("Not a folder")
        return await _file_list(request, item, deep=deep, with_folders=with_folders)
    if "properties" in request.query:
        return _properties(request, item)
    if isinstance(item, Artifact):
        return json_response(file_info(request, item))
    return json_response(await folder_info(request, item))


async def _stats(request: web.Request, item: Artifact | Folder) -> web.Response:
    """Artifactory's ``?stats``: downloads of one file (timestamps in epoch ms, 0 for never)."""
    if not isinstance(item, Artifact):
        raise BadRequest("Statistics are kept for files, not folders")
    source = request.app.get(keys.download_stats)
    stats = await source.download_stats(item.repo, item.path) if source is not None else DownloadStats()
    return json_response(
        {
            "uri": f"{base_url(request)}/api/storage/{item.repo}/{url_quote(item.path)}",
            "downloadCount": stats.count,
            "lastDownloaded": stats.last_downloaded,
            "lastDownloadedBy": stats.last_downloaded_by,
            "remoteDownloadCount": 0,
            "remoteLastDownloaded": 0,
        }
    )


def _properties(request: web.Request, item: Artifact | Folder) -> web.Response:
    props = item.properties if isinstance(item, Artifact) else {}
    wanted = parse_keys(text) if (text := decode_query(request.rel_url.raw_query_string, "properties")) else []
    if wanted:
        props = {k: v for k, v in props.items() if k in wanted}
    if not props:
        raise NotFound("No properties could be found.")
    uri = f"{base_url(request)}/api/storage/{item.repo}/{url_quote(item.path)}"
    return json_response({"properties": props, "uri": uri})


async def _file_list(request: web.Request, folder: Folder, *, deep: bool, with_folders: bool) -> web.StreamResponse:
    """``?list[&deep=1][&listFolders=1]``, streamed so a huge tree never sits in memory."""
    uri_path = f"/{url_quote(folder.path)}" if folder.path else ""
    head = {"uri": f"{base_url(request)}/api/storage/{folder.repo}{uri_path}", "created": iso(folder.created)}
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(json.dumps(head)[:-1].encode() + b', "files": [')
    prefix = len(folder.path) + 1 if folder.path else 0
    first = True

    async def emit(entry: dict[str, Any]) -> None:
        nonlocal first
        await response.write((b"" if first else b",") + json.dumps(entry).encode())
        first = False

    if deep:
        async for a in _walk(request, folder):
            await emit(_list_entry(a, prefix))
    else:
        listing = await virtual_resolve.listing(request, folder.repo, folder.path)
        if with_folders:
            for f in listing.folders:
                await emit(
                    {
                        "uri": "/" + f.path[prefix:],
                        "size": -1,
                        "lastModified": iso(f.created),
                        "folder": True,
                    }
                )
        for a in listing.files:
            await emit(_list_entry(a, prefix))
    await response.write(b"]}\n")
    await response.write_eof()
    return response


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "0")
    if value not in ("0", "1"):
        raise BadRequest(f"'{name}' must be 0 or 1")
    return value == "1"


def _list_entry(a: Artifact, prefix: int) -> dict[str, Any]:
    return {
        "uri": "/" + a.path[prefix:],
        "size": a.size,
        "lastModified": iso(a.modified),
        "folder": False,
        "sha1": a.sha1,
        "sha2": a.sha256,
    }
