"""The artifact a GET of ``{repo}/{path}`` serves: one function for a direct request and for each
member a virtual repo resolves through, so a member of any kind answers as it would directly."""

from __future__ import annotations

from aiohttp import web

from repository.catalog import Artifact

from . import keys


async def artifact_for(request: web.Request, repo: str, path: str) -> Artifact:
    """The servable artifact at ``path`` in ``repo`` (the caller checked read permission):
    ``NotFound`` when there is none, ``BlobQuarantined`` when its bytes are out of service."""
    artifact = request.app[keys.artifacts].servable_from_memory(repo, path)
    return artifact if artifact is not None else await load_artifact(request, repo, path)


async def load_artifact(request: web.Request, repo: str, path: str) -> Artifact:
    """``artifact_for`` when the node's memory has no servable copy: read from the catalog and
    checked servable (a download that found it in memory skips this coroutine)."""
    artifacts = request.app[keys.artifacts]
    artifact = await artifacts.file(repo, path)
    await artifacts.servable(artifact)
    return artifact
