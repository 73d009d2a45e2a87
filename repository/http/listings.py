"""What a caller may see of a folder in a (non-virtual) repo: its children and the files below it,
without the paths permission targets keep from the caller. Listings of a repo and of each member
of a virtual repo go through here alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from repository.catalog import Artifact, Listing, Repo
from repository.permissions import Action

from . import keys
from .auth import may


async def visible_children(request: web.Request, repo: str, path: str) -> Listing:
    listing = await request.app[keys.catalog].children(repo, path)
    visible = await visibility(request, repo)
    return Listing([f for f in listing.folders if visible(f.path)], [a for a in listing.files if visible(a.path)])


async def visible_files(request: web.Request, repo: str, path: str) -> AsyncIterator[Artifact]:
    """Every file below ``path`` in path order, streamed a page at a time."""
    visible = await visibility(request, repo)
    async for artifact in request.app[keys.catalog].walk_files(repo, path):
        if visible(artifact.path):
            yield artifact


async def visibility(request: web.Request, repo_key: str) -> Callable[[str], bool]:
    """Which paths of a listing the caller may see: all of them unless targets cover the repo."""
    repo = await request.app[keys.catalog].get_repo(repo_key)
    if repo is None or not request.app[keys.permissions].for_repo(repo_key):
        return lambda _path: True
    found: Repo = repo
    return lambda path: may(request, Action.read, found, path)
