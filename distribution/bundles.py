"""Release Bundles: resolve a spec into artifacts, store, sign, and answer them.

A bundle version is immutable once signed, its bytes too: every stored bundle version
pins the blobs it lists (``BundleStore.pinned``), so deleting or overwriting a source
path never frees them; deleting the bundle version does. Every call is idempotent where
a client may retry after a time-out: creating the same name and version with the same
body answers the bundle that exists; only different content is a 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from repository.artifacts import ArtifactService
from repository.catalog import Artifact, Repo, now_ms
from repository.errors import BadRequest, Conflict, NotFound
from repository.permissions import Readable
from wire.manifest import (
    Manifest,
    ManifestArtifact,
    ManifestError,
    artifact_bytes,
    check_bundle_name,
    check_bundle_version,
    check_limits,
    encode,
)
from wire.timestamps import iso, utc_timestamp

from .bundle_store import Bundle, BundleArtifact, BundleStore, SignedManifest, total_size
from .signing import KeyInfo, Signer
from .specs import Query, SpecError, check_distinct_targets, parse_spec

NOTES_SYNTAXES = ("plain_text", "markdown", "asciidoc")
MAX_DESCRIPTION = 4096
MAX_NOTES = 1024 * 1024
_REQUEST_KEYS = {
    "name",
    "version",
    "dry_run",
    "sign_immediately",
    "signing_key_alias",
    "description",
    "release_notes",
    "spec",
    "storing_repository",
}


@dataclass
class Selection:
    """What a spec selects, by target path, and the bytes it adds to the bundle's manifest."""

    artifacts: dict[str, BundleArtifact] = field(default_factory=dict)
    manifest_bytes: int = 0


@dataclass(frozen=True)
class BundleRequest:
    name: str
    version: str
    description: str
    release_notes: dict[str, str]
    queries: tuple[Query, ...]
    request_sha256: str
    sign_immediately: bool
    signing_key_alias: str | None
    dry_run: bool


def check_name_version(name: object, version: object) -> None:
    """The manifest's own rules, so every bundle that can be created can be signed."""
    check_bundle_name(name)
    check_bundle_version(version)


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be true or false")
    return value


def _release_notes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) - {"syntax", "content"}:
        raise BadRequest("'release_notes' must be an object with 'syntax' and 'content'")
    syntax, content = value.get("syntax", "plain_text"), value.get("content", "")
    if syntax not in NOTES_SYNTAXES:
        raise BadRequest(f"'release_notes.syntax' must be one of {', '.join(NOTES_SYNTAXES)}")
    if not isinstance(content, str) or len(content) > MAX_NOTES:
        raise BadRequest(f"'release_notes.content' must be a string of at most {MAX_NOTES} characters")
    return {"syntax": syntax, "content": content}


def parse_bundle_request(body: dict[str, Any], *, name: str | None = None, version: str | None = None) -> BundleRequest:
    """Validate a create/update body; ``name``/``version`` come from the URL on update."""
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in the request")
    name = name if name is not None else body.get("name")
    version = version if version is not None else body.get("version")
    check_name_version(name, version)  # type: ignore[arg-type]
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BadRequest(f"'description' must be a string of at most {MAX_DESCRIPTION} characters")
    alias = body.get("signing_key_alias")
    if "signing_key_alias" in body and not isinstance(alias, str):
        raise BadRequest("'signing_key_alias' must be a string")
    if not isinstance(body.get("storing_repository", ""), str):
        raise BadRequest("'storing_repository' must be a string")
    if "spec" not in body:
        raise SpecError("spec is missing")
    notes = _release_notes(body.get("release_notes", {}))
    queries = parse_spec(body["spec"])
    asked = {"name": name, "version": version, "description": description, "release_notes": notes, "spec": body["spec"]}
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return BundleRequest(
        name=name,  # type: ignore[arg-type]
        version=version,  # type: ignore[arg-type]
        description=description,
        release_notes=notes,
        queries=queries,
        request_sha256=digest,
        sign_immediately=_flag(body, "sign_immediately", False),
        signing_key_alias=alias,
        dry_run=_flag(body, "dry_run", False),
    )


class BundleService:
    def __init__(self, store: BundleStore, artifacts: ArtifactService, signer: Signer, max_artifacts: int) -> None:
        self.store = store
        self.artifacts = artifacts
        self.catalog = artifacts.catalog
        self.signer = signer
        self.max_artifacts = max_artifacts
        self._lock = asyncio.Lock()  # orders create/update/sign of bundles in this process

    async def resolve(self, queries: tuple[Query, ...], readable: Readable) -> tuple[list[BundleArtifact], int]:
        """Every artifact the queries select that the caller may read, with its target path, and
        the bytes they add to the bundle's manifest; refused when empty, too many or colliding.
        A file the caller may not read is left out, as a listing leaves it out: a bundle never
        copies bytes its creator could not read."""
        found = Selection()
        for query in queries:
            for scope in query.scopes:
                repos = await self._repos(scope.repo)
                for repo in repos:
                    async for page in self.catalog.walk_pages(repo.key, scope.folder):
                        # matching and mapping regexes cost per artifact: keep them off the loop
                        await asyncio.to_thread(self._select, found, query, repo, page, readable)
        if not found.artifacts:
            raise SpecError("spec matches no artifacts")
        check_distinct_targets((a.source, a.target) for a in found.artifacts.values())  # no file where a folder must be
        return [found.artifacts[t] for t in sorted(found.artifacts)], found.manifest_bytes

    @staticmethod
    def _check_limits(request: BundleRequest, user: str, artifacts: list[BundleArtifact], size: int) -> None:
        """Refuse what could be stored but never signed: a manifest over the contract's limits."""
        try:
            header = Manifest(
                name=request.name,
                version=request.version,
                created=utc_timestamp(),  # always of the same length
                created_by=user,
                description=request.description,
                release_notes=request.release_notes,
                artifacts=(),
            )
            check_limits(header, len(artifacts), size)
        except ManifestError as exc:
            raise BadRequest(f"The bundle could never be signed: {exc.message}") from None

    async def _repos(self, key: str | None) -> list[Repo]:
        if key is None:
            return await self.catalog.list_repos()
        repo = await self.catalog.get_repo(key)
        return [repo] if repo is not None else []

    def _select(self, found: Selection, query: Query, repo: Repo, page: list[Artifact], readable: Readable) -> None:
        for artifact in page:
            if query.matches(repo.key, artifact.path) and readable(repo, artifact.path):
                self._add(found, query, repo.key, artifact)

    def _add(self, found: Selection, query: Query, repo: str, a: Artifact) -> None:
        source = f"{repo}/{a.path}"
        target = query.target(repo, a.path)
        props = {k: list(v) for k, v in a.properties.items()}
        for key, values in query.added_props.items():
            props[key] = list(dict.fromkeys([*props.get(key, []), *values]))
        existing = found.artifacts.get(target)
        if existing is not None:
            if existing.source != source:
                raise SpecError(f"target path '{target}' would hold both '{existing.source}' and '{source}'")
            return
        if len(found.artifacts) >= self.max_artifacts:
            raise BadRequest(f"spec selects more than the limit of {self.max_artifacts} artifacts")
        added = found.artifacts[target] = BundleArtifact(target, source, a.sha256, a.sha1, a.md5, a.size, props)
        found.manifest_bytes += artifact_bytes(added)

    async def create(
        self, request: BundleRequest, user: str, readable: Readable
    ) -> tuple[Bundle, list[BundleArtifact], bool]:
        """Create (or, for an identical retry, find) a bundle; answers whether it was new."""
        if request.sign_immediately:
            await self._signing_key(request.signing_key_alias)  # an unknown key refuses before anything is stored
        async with self._lock:
            existing = await self.store.get(request.name, request.version)
            if existing is not None:
                if existing.request_sha256 != request.request_sha256:
                    raise Conflict(f"Release bundle {request.name}/{request.version} already exists with other content")
                return existing, await self.store.artifacts(request.name, request.version), False
            artifacts, size = await self.resolve(request.queries, readable)
            self._check_limits(request, user, artifacts, size)
            bundle = self._new_bundle(request, artifacts, user, created=now_ms())
            if not request.dry_run:
                try:
                    await self._save(bundle, artifacts, replace=False)
                except sqlite3.IntegrityError:
                    raise Conflict(f"Release bundle {request.name}/{request.version} already exists") from None
            return bundle, artifacts, True

    async def update(
        self, request: BundleRequest, user: str, readable: Readable
    ) -> tuple[Bundle, list[BundleArtifact]]:
        if request.sign_immediately:
            await self._signing_key(request.signing_key_alias)
        async with self._lock:
            existing = await self.get(request.name, request.version)
            if existing.state != "OPEN":
                raise Conflict(f"Release bundle {request.name}/{request.version} is signed and cannot change")
            artifacts, size = await self.resolve(request.queries, readable)
            self._check_limits(request, user, artifacts, size)
            bundle = self._new_bundle(request, artifacts, user, created=existing.created)
            if not request.dry_run:
                replaced = await self.store.artifacts(request.name, request.version)
                await self._save(bundle, artifacts, replace=True)
                await self.artifacts.collect(_blobs(replaced))  # those no longer listed may go
            return bundle, artifacts

    async def _save(self, bundle: Bundle, artifacts: list[BundleArtifact], *, replace: bool) -> None:
        """Store the bundle, pinning its blobs, unless one was deleted since it was resolved (409)."""
        await self.artifacts.keep(_blobs(artifacts), partial(self.store.save, bundle, artifacts, replace=replace))

    @staticmethod
    def _new_bundle(request: BundleRequest, artifacts: list[BundleArtifact], user: str, *, created: int) -> Bundle:
        return Bundle(
            name=request.name,
            version=request.version,
            state="OPEN",
            description=request.description,
            release_notes=request.release_notes,
            request_sha256=request.request_sha256,
            created=created,
            created_by=user,
            modified=now_ms(),
            artifacts_count=len(artifacts),
            artifacts_size=total_size(artifacts),
        )

    async def get(self, name: str, version: str) -> Bundle:
        check_name_version(name, version)
        bundle = await self.store.get(name, version)
        if bundle is None:
            raise NotFound(f"Release bundle {name}/{version} not found")
        return bundle

    async def sign(self, name: str, version: str, alias: str | None) -> Bundle:
        """Sign an OPEN bundle; signing a signed one again with the same key answers it unchanged."""
        async with self._lock:
            bundle = await self.get(name, version)
            key = await self._signing_key(alias)
            if bundle.state == "SIGNED":
                if bundle.signed_by != key.fingerprint:
                    raise Conflict(f"Release bundle {name}/{version} is already signed with another key")
                return bundle
            manifest = encode(await self._manifest(bundle))
            signature = await asyncio.to_thread(self.signer.sign, manifest, key.alias)
            sha256 = hashlib.sha256(manifest).hexdigest()
            signed = await self.store.mark_signed(
                name,
                version,
                manifest=manifest,
                manifest_sha256=sha256,
                signature=signature,
                signed_by=key.fingerprint,
                at=now_ms(),
            )
            if not signed:
                raise Conflict(f"Release bundle {name}/{version} changed while signing; retry")
            return await self.get(name, version)

    async def _signing_key(self, alias: str | None) -> KeyInfo:
        keys = await asyncio.to_thread(self.signer.keys)
        for key in keys:
            if (alias is None and key.default) or key.alias == alias:
                return key
        if alias:
            raise NotFound(f"No signing key with alias '{alias}'")
        raise Conflict("No default signing key")

    async def _manifest(self, bundle: Bundle) -> Manifest:
        artifacts = await self.store.artifacts(bundle.name, bundle.version)
        return Manifest(
            name=bundle.name,
            version=bundle.version,
            created=iso(bundle.created),
            created_by=bundle.created_by,
            description=bundle.description,
            release_notes=bundle.release_notes,
            artifacts=tuple(
                ManifestArtifact(
                    target=a.target,
                    source=a.source,
                    size=a.size,
                    sha256=a.sha256,
                    sha1=a.sha1,
                    md5=a.md5,
                    properties=a.properties,
                )
                for a in artifacts
            ),
        )

    async def signed_parts(self, name: str, version: str) -> tuple[bytes, str]:
        bundle = await self.get(name, version)
        parts = await self.store.signed_parts(name, version)
        if parts is None:
            raise NotFound(f"Release bundle {bundle.name}/{bundle.version} is not signed yet")
        return parts

    async def signed_manifest(self, name: str, version: str) -> SignedManifest:
        """The size and signature of a signed bundle's manifest (its bytes: ``store.manifest_chunks``)."""
        bundle = await self.get(name, version)
        signed = await self.store.signed_manifest(name, version)
        if signed is None:
            raise NotFound(f"Release bundle {bundle.name}/{bundle.version} is not signed yet")
        return signed

    async def delete(self, name: str, version: str) -> None:
        """Delete a bundle version; the blobs it alone held (no path, no other bundle) are freed."""
        check_name_version(name, version)
        listed = await self.store.artifacts(name, version)
        if not await self.store.delete(name, version):
            raise NotFound(f"Release bundle {name}/{version} not found")
        await self.artifacts.collect(_blobs(listed))


def _blobs(artifacts: Iterable[BundleArtifact]) -> set[str]:
    return {a.sha256 for a in artifacts}
