"""The artifact a GET of ``{repo}/{path}`` serves: one function for a direct request and for each
member a virtual repo resolves through, so a member of any kind answers as it would directly."""

from __future__ import annotations

from aiohttp import web

from repository.catalog import Artifact

from . import keys


async def artifact_for(request: web.Request, repo: str, path: str) -> Artifact:
    """The servable artifact at ``path`` in ``repo`` (the caller checked read permission):
    ``NotFound`` when there is none, ``BlobQuarantined`` when its bytes are out of service."""
    artifacts = request.app[keys.artifacts]
    artifact = artifacts.servable_from_memory(repo, path)
    if artifact is None:
        artifact = await artifacts.file(repo, path)
        await artifacts.servable(artifact)
    return artifact
