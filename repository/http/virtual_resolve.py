"""How the artifact API reads a virtual repo: its members in order, first hit wins.

Who may read what: the caller needs read on the virtual repo (its anonymous read and the
permission targets that name it, as for any repo), and a member is consulted only when the
caller may also read the path in that member and the member's own access rules admit the
request. A member that fails either is skipped as if it did not hold the path: its content is
never served or listed through the virtual repo, and the answer does not say it exists. A
signed URL for a virtual path is an admin's grant for that path, so it reads every member.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web

from repository.catalog import Artifact, Folder, Listing, Repo
from repository.errors import NotFound
from repository.permissions import Action
from repository.virtual import VirtualRepo, first_wins, merge_sorted

from . import keys
from .auth import may
from .listings import visible_children, visible_files
from .lookup import artifact_for


def virtual_repo(request: web.Request, key: str) -> VirtualRepo | None:
    """The virtual repo named ``key``, or None (also on a node without virtual repos)."""
    repos = request.app.get(keys.virtual_repos)
    return repos.get(key) if repos is not None else None


async def members(request: web.Request, virtual: VirtualRepo, path: str) -> list[Repo]:
    """The repos ``virtual`` resolves ``path`` through for this caller, in order."""
    app = request.app
    catalog = app[keys.catalog]
    signed = app.get(keys.signed_read)
    granted = signed is not None and signed(request)
    admits = app.get(keys.member_admits)
    found = []
    for key in app[keys.virtual_repos].expand(virtual.key):
        repo = await catalog.get_repo(key)
        if repo is None or (admits is not None and not admits(request, key)):
            continue
        if granted or may(request, Action.read, repo, path):
            found.append(repo)
    return found


async def resolve(request: web.Request, virtual: VirtualRepo, path: str) -> Artifact:
    """The artifact the first member holding ``path`` serves (the caller may read the virtual
    repo); the member is left on the request for the audit trail."""
    for repo in await members(request, virtual, path):
        try:
            artifact = await artifact_for(request, repo.key, path)
        except NotFound:
            continue
        request[keys.served_from] = repo.key
        return artifact
    raise NotFound()


async def item(request: web.Request, virtual: VirtualRepo, path: str) -> Artifact | Folder:
    """File or folder info at ``path``, named for the virtual repo: the first member's file, or
    a folder when the first member holding the path has one there (the root always is one)."""
    if not path:
        return Folder(virtual.key, "", virtual.created, "system")
    service = request.app[keys.artifacts]
    for repo in await members(request, virtual, path):
        try:
            found = await service.item(repo.key, path)
        except NotFound:
            continue
        if isinstance(found, Artifact):
            return replace(found, repo=virtual.key)
        return Folder(virtual.key, path, found.created, found.created_by)
    raise NotFound()


async def children(request: web.Request, virtual: VirtualRepo, path: str) -> Listing:
    """The folder's children over every member the caller may read: a name in several members
    is the first one's (file or folder), folders only some members have are all there."""
    listings = []
    for repo in await members(request, virtual, path):
        listing = await visible_children(request, repo.key, path)
        entries: list[tuple[str, Folder | Artifact]] = [(f.path, f) for f in listing.folders]
        listings.append(entries + [(a.path, a) for a in listing.files])
    merged = [entry for _, entry in first_wins(listings)]
    return Listing([e for e in merged if isinstance(e, Folder)], [e for e in merged if isinstance(e, Artifact)])


async def walk_files(request: web.Request, virtual: VirtualRepo, path: str) -> AsyncIterator[Artifact]:
    """Every file below ``path`` over the members in path order, the first member's where
    several hold a path; streamed, as a local repo's deep listing is."""
    streams = [_named(visible_files(request, repo.key, path)) for repo in await members(request, virtual, path)]
    async for _, artifact in merge_sorted(streams):
        yield artifact


async def _named(files: AsyncIterator[Artifact]) -> AsyncIterator[tuple[str, Artifact]]:
    async for artifact in files:
        yield artifact.path, artifact
