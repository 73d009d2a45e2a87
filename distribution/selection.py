"""What a bundle spec selects from the source repos, staged in the database a page at a time.

The catalog is walked a page at a time and each page's selection goes to the staging table
(``BundleStore.stage``) at once; what stays in memory are counters, so a spec that selects
100,000 files costs what one of 1,000 does. The staged rows become a bundle's content in one
statement (``BundleStore.commit_staged``), or are dropped (``unstage``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from repository.catalog import Artifact, Catalog, Repo, now_ms
from repository.errors import BadRequest
from repository.permissions import Readable
from wire.manifest import artifact_bytes

from .bundle_store import BundleArtifact, BundleStore
from .specs import NestedTargets, Query, SpecError

# Staged rows older than this are a create's that a crash cut off (a create stages for seconds).
STAGING_GRACE_MS = 3600 * 1000


@dataclass
class Selection:
    """What a spec selected, staged under ``token``: counted, not held."""

    token: str
    count: int = 0
    size: int = 0
    manifest_bytes: int = 0  # what the artifacts add to the bundle's manifest (``artifact_bytes``)


async def select(
    store: BundleStore, catalog: Catalog, queries: tuple[Query, ...], readable: Readable, max_artifacts: int
) -> Selection:
    """Stage every artifact the queries select that the caller may read, with its target path;
    refused when empty, over ``max_artifacts`` or colliding, and then nothing stays staged.
    A file the caller may not read is left out, as a listing leaves it out: a bundle never
    copies bytes its creator could not read."""
    await store.clear_staging(now_ms() - STAGING_GRACE_MS)  # left by a create a crash cut off
    selection = Selection(uuid.uuid4().hex)
    try:
        for query in queries:
            for scope in query.scopes:
                for repo in await _repos(catalog, scope.repo):
                    async for page in catalog.walk_pages(repo.key, scope.folder):
                        await _stage_page(store, selection, query, repo, page, readable, max_artifacts)
        if not selection.count:
            raise SpecError("spec matches no artifacts")
        nesting = NestedTargets()  # no file where a folder must be
        async for staged in store.staged_pages(selection.token):
            for a in staged:
                nesting.add(a.source, a.target)
    except BaseException:
        await store.unstage(selection.token)
        raise
    return selection


async def _stage_page(
    store: BundleStore,
    selection: Selection,
    query: Query,
    repo: Repo,
    page: list[Artifact],
    readable: Readable,
    max_artifacts: int,
) -> None:
    # matching and mapping regexes cost per artifact: keep them off the loop
    picked = await asyncio.to_thread(_pick, query, repo, page, readable)
    new, taken = await store.stage(selection.token, picked)
    if taken is not None:
        raise SpecError(f"target path '{taken.target}' would hold both '{taken.held_source}' and '{taken.source}'")
    selection.count += len(new)
    if selection.count > max_artifacts:
        raise BadRequest(f"spec selects more than the limit of {max_artifacts} artifacts")
    selection.size += sum(a.size for a in new)
    selection.manifest_bytes += await asyncio.to_thread(lambda: sum(map(artifact_bytes, new)))


async def _repos(catalog: Catalog, key: str | None) -> list[Repo]:
    if key is None:
        return await catalog.list_repos()
    repo = await catalog.get_repo(key)
    return [repo] if repo is not None else []


def _pick(query: Query, repo: Repo, page: list[Artifact], readable: Readable) -> list[BundleArtifact]:
    return [
        _bundle_artifact(query, repo.key, artifact)
        for artifact in page
        if query.matches(repo.key, artifact.path, artifact.properties) and readable(repo, artifact.path)
    ]


def _bundle_artifact(query: Query, repo: str, a: Artifact) -> BundleArtifact:
    props = {k: list(v) for k, v in a.properties.items()}
    for key, values in query.added_props.items():
        props[key] = list(dict.fromkeys([*props.get(key, []), *values]))
    return BundleArtifact(query.target(repo, a.path), f"{repo}/{a.path}", a.sha256, a.sha1, a.md5, a.size, props)
