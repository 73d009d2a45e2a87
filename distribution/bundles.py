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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from repository.artifacts import ArtifactService
from repository.catalog import now_ms
from repository.errors import BadRequest, Conflict, NotFound
from repository.permissions import Readable
from wire.manifest import (
    Manifest,
    ManifestError,
    ManifestSbom,
    check_bundle_name,
    check_bundle_version,
    check_limits,
)
from wire.timestamps import utc_timestamp

from .bundle_store import Bundle, BundleStore, SignedManifest
from .manifests import sign_bundle
from .sboms import BundleSboms
from .selection import Selection, select
from .signing import KeyInfo, Signer
from .specs import Query, SpecError, parse_spec

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


@dataclass(frozen=True)
class Answer:
    """A created or updated bundle; for a dry run, the token its artifacts are staged under
    until ``BundleService.discard`` (a stored bundle's are read from the bundle)."""

    bundle: Bundle
    new: bool
    staged: str | None = None


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
    def __init__(
        self,
        store: BundleStore,
        artifacts: ArtifactService,
        signer: Signer,
        max_artifacts: int,
        spool_dir: Path,
        sboms: BundleSboms,
    ) -> None:
        self.store = store
        self.sboms = sboms
        self.spool_dir = spool_dir  # where a manifest is written while it is signed
        self.artifacts = artifacts
        self.catalog = artifacts.catalog
        self.signer = signer
        self.max_artifacts = max_artifacts
        self._lock = asyncio.Lock()  # orders create/update/sign of bundles in this process

    async def resolve(self, queries: tuple[Query, ...], readable: Readable) -> Selection:
        """Stage what the queries select (``selection.select``); the caller commits or unstages it."""
        return await select(self.store, self.catalog, queries, readable, self.max_artifacts)

    @staticmethod
    def _check_limits(
        request: BundleRequest, user: str, selection: Selection, sbom: ManifestSbom | None = None
    ) -> None:
        """Refuse what could be stored but never signed: a manifest over the contract's limits
        (checked before the SBOM is built, and again with its field once it is)."""
        try:
            header = Manifest(
                name=request.name,
                version=request.version,
                created=utc_timestamp(),  # always of the same length
                created_by=user,
                description=request.description,
                release_notes=request.release_notes,
                artifacts=(),
                sbom=sbom,
            )
            check_limits(header, selection.count, selection.manifest_bytes)
        except ManifestError as exc:
            raise BadRequest(f"The bundle could never be signed: {exc.message}") from None

    async def create(self, request: BundleRequest, user: str, readable: Readable) -> Answer:
        """Create (or, for an identical retry, find) a bundle; says whether it was new."""
        if request.sign_immediately:
            await self._signing_key(request.signing_key_alias)  # an unknown key refuses before anything is stored
        async with self._lock:
            existing = await self.store.get(request.name, request.version)
            if existing is not None:
                if existing.request_sha256 != request.request_sha256:
                    raise Conflict(f"Release bundle {request.name}/{request.version} already exists with other content")
                return Answer(existing, new=False)
            selection = await self.resolve(request.queries, readable)
            try:
                self._check_limits(request, user, selection)
                bundle = self._new_bundle(request, selection, user, created=now_ms())
                sbom = await self._sbom(request, user, selection, bundle)
                if request.dry_run:
                    return Answer(bundle, new=True, staged=selection.token)
                try:
                    await self._save(bundle, selection.token, sbom, replace=False)
                except sa.exc.IntegrityError:
                    raise Conflict(f"Release bundle {request.name}/{request.version} already exists") from None
            except BaseException:
                await self.store.unstage(selection.token)
                raise
            return Answer(bundle, new=True)

    async def update(self, request: BundleRequest, user: str, readable: Readable) -> Answer:
        if request.sign_immediately:
            await self._signing_key(request.signing_key_alias)
        async with self._lock:
            existing = await self.get(request.name, request.version)
            if existing.state != "OPEN":
                raise Conflict(f"Release bundle {request.name}/{request.version} is signed and cannot change")
            selection = await self.resolve(request.queries, readable)
            try:
                self._check_limits(request, user, selection)
                bundle = self._new_bundle(request, selection, user, created=existing.created)
                sbom = await self._sbom(request, user, selection, bundle)
                if request.dry_run:
                    return Answer(bundle, new=False, staged=selection.token)
                replaced = await self.store.blobs(request.name, request.version)
                await self._save(bundle, selection.token, sbom, replace=True)
            except BaseException:
                await self.store.unstage(selection.token)
                raise
            await self.artifacts.collect(replaced)  # those no longer listed may go
            return Answer(bundle, new=False)

    async def _sbom(self, request: BundleRequest, user: str, selection: Selection, bundle: Bundle) -> ManifestSbom:
        """Build the bundle's SBOM (stored, unless a dry run), refused with its manifest field
        over the manifest's limit (its blob then goes)."""
        sbom = await self.sboms.make(bundle, selection.token, keep=not request.dry_run)
        try:
            self._check_limits(request, user, selection, sbom)
        except BadRequest:
            await self.artifacts.collect([sbom.sha256])
            raise
        return sbom

    async def discard(self, answer: Answer) -> None:
        """Drop what a dry run staged, once its answer was sent."""
        if answer.staged is not None:
            await self.store.unstage(answer.staged)

    async def _save(self, bundle: Bundle, token: str, sbom: ManifestSbom, *, replace: bool) -> None:
        """Store the bundle, pinning its blobs and its SBOM, unless one was deleted since it was
        resolved (409). The SBOM's blob is stored already: a blob no row names yet is left alone
        by collects (they are asked for other blobs) and by the sweep (for its grace period)."""
        commit = partial(self.store.commit_staged, bundle, token, replace=replace, sbom=sbom)
        await self.artifacts.keep_pages(partial(self.store.staged_blobs, token), commit)

    @staticmethod
    def _new_bundle(request: BundleRequest, selection: Selection, user: str, *, created: int) -> Bundle:
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
            artifacts_count=selection.count,
            artifacts_size=selection.size,
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
            signed = await sign_bundle(self.store, self.signer, bundle, key, self.spool_dir, now_ms())
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
        listed = await self.store.blobs(name, version)
        if not await self.store.delete(name, version):
            raise NotFound(f"Release bundle {name}/{version} not found")
        await self.artifacts.collect(listed)
