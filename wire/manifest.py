"""The release bundle manifest: the wire contract between the Distribution service and edges.

A manifest is signed as bytes, so there must be exactly one byte sequence for
each manifest: UTF-8 JSON with sorted keys, no insignificant whitespace and
integers only. ``encode`` produces it; ``decode`` accepts only it, so a
manifest that verifies is also one that every node reads the same way (no
duplicate keys that one parser takes first and another last, no floats that
round differently, no NaN that some parsers refuse).

A top-level ``"format"`` field versions the contract; a node refuses formats it
does not know instead of guessing. The optional ``"sbom"`` field (the sha256 and size of
the bundle's CycloneDX SBOM) was added without a new format: a manifest without it keeps
its bytes, and its signature, exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, Protocol

from .errors import InvalidInput, InvalidPath
from .jsonstrict import JsonRefused, loads
from .paths import check_artifact_path, check_repo_key
from .timestamps import utc_timestamp

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_ARTIFACTS = 100_000
MAX_SIZE = 2**63 - 1  # what sqlite and every S3 server can store as a length
MAX_PROPERTY_KEY_BYTES = 255

# Close to JFrog's rules for release bundle names and versions (a letter, digit or
# underscore first, then letters, digits, underscores, periods and hyphens), with '+'
# allowed in versions for semver build metadata and 128 characters for both. The
# contract must accept every bundle the Distribution service creates.
BUNDLE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
BUNDLE_VERSION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
RELEASE_NOTES_SYNTAXES = ("plain_text", "markdown", "asciidoc")
DIGEST_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}
HEX_RE = re.compile(r"[0-9a-f]+")

MANIFEST_FIELDS = frozenset(
    {"format", "name", "version", "created", "created_by", "description", "release_notes", "artifacts"}
)
OPTIONAL_MANIFEST_FIELDS = frozenset({"sbom"})
SBOM_FIELDS = frozenset({"sha256", "size"})
ARTIFACT_FIELDS = frozenset({"target", "source", "size", "sha256", "sha1", "md5", "properties"})
RELEASE_NOTES_FIELDS = frozenset({"syntax", "content"})


class ManifestError(InvalidInput):
    """A manifest that is not exactly one the contract allows; the message says where and why."""

    default_message = "Invalid release bundle manifest"


class ManifestTooLarge(ManifestError):
    status = 413
    default_message = f"Release bundle manifest is larger than {MAX_MANIFEST_BYTES} bytes"


def _fail(where: str, problem: str) -> NoReturn:
    raise ManifestError(f"Invalid manifest: {where}: {problem}")


NAME_RULE = "1 to 128 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'"
VERSION_RULE = "1 to 128 letters, digits, '_', '.', '+' or '-', starting with a letter, digit or '_'"


def check_bundle_name(name: object, where: str | None = None) -> str:
    """Without ``where`` the refusal speaks of a request (a 400 naming the rule), not of a manifest."""
    if type(name) is not str or not BUNDLE_NAME_RE.fullmatch(name):
        if where is None:
            raise InvalidInput(f"Invalid bundle name: {NAME_RULE}")
        _fail(where, NAME_RULE)
    return name


def check_bundle_version(version: object, where: str | None = None) -> str:
    if type(version) is not str or not BUNDLE_VERSION_RE.fullmatch(version):
        if where is None:
            raise InvalidInput(f"Invalid bundle version: {VERSION_RULE}")
        _fail(where, VERSION_RULE)
    return version


def _check_text(value: object, where: str, *, single_line: bool = False) -> str:
    if type(value) is not str:
        _fail(where, "must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(where, "contains a lone surrogate (not encodable as UTF-8)")
    if single_line and any(unicodedata.category(ch) == "Cc" for ch in value):
        _fail(where, "control characters are not allowed")
    return value


def _check_repo_path(value: object, where: str) -> str:
    """``repo/path/inside``, judged by the same rules as a download URL."""
    text = _check_text(value, where)
    repo, slash, path = text.partition("/")
    if not slash:
        _fail(where, "must be 'repo/path'")
    try:
        check_repo_key(repo)
        check_artifact_path(path)
    except InvalidPath as exc:
        _fail(where, exc.message)
    return text


def _check_properties(value: object, where: str) -> dict[str, list[str]]:
    """Keys sorted, each value list sorted and without duplicates: one canonical form."""
    if not isinstance(value, Mapping):
        _fail(where, "must be an object of string lists")
    for key in value:
        _check_text(key, f"{where} key", single_line=True)
    normal: dict[str, list[str]] = {}
    for key in sorted(value):
        item_where = f"{where}[{key!r}]"
        if not key or len(key.encode("utf-8")) > MAX_PROPERTY_KEY_BYTES:
            _fail(item_where, f"a property key must be 1 to {MAX_PROPERTY_KEY_BYTES} bytes")
        values = value[key]
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            _fail(item_where, "must be a list of strings")
        normal[key] = sorted({_check_text(v, item_where) for v in values})
    return normal


@dataclass(frozen=True)
class ManifestArtifact:
    """One file of a bundle: where it lands on an edge, where it came from, and its digests.

    Properties are normalised on construction (keys sorted, values sorted and unique),
    and copied, so a caller's later change to its dict does not reach the manifest.
    """

    target: str
    source: str
    size: int
    sha256: str
    sha1: str
    md5: str
    properties: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check("artifact")

    def _check(self, where: str) -> None:
        _check_repo_path(self.target, f"{where}.target")
        _check_repo_path(self.source, f"{where}.source")
        if type(self.size) is not int or not 0 <= self.size <= MAX_SIZE:
            _fail(f"{where}.size", f"must be an integer from 0 to {MAX_SIZE}")
        for name, length in DIGEST_LENGTHS.items():
            digest = getattr(self, name)
            if type(digest) is not str or len(digest) != length or not HEX_RE.fullmatch(digest):
                _fail(f"{where}.{name}", f"must be {length} lowercase hex characters")
        object.__setattr__(self, "properties", _check_properties(self.properties, f"{where}.properties"))


@dataclass(frozen=True)
class ManifestSbom:
    """The bundle's SBOM by digest: signed with the manifest, so the document an edge serves is as
    trusted as the files; it travels as one more blob of the bundle (docs/transactions.md)."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        digest = self.sha256
        if type(digest) is not str or len(digest) != 64 or not HEX_RE.fullmatch(digest):
            _fail("sbom.sha256", "must be 64 lowercase hex characters")
        if type(self.size) is not int or not 1 <= self.size <= MAX_SIZE:
            _fail("sbom.size", f"must be an integer from 1 to {MAX_SIZE}")


DEFAULT_RELEASE_NOTES: Mapping[str, str] = {"syntax": "plain_text", "content": ""}


@dataclass(frozen=True)
class Manifest:
    """A release bundle version. Artifacts must come sorted by target, each target once;
    ``Manifest.create`` sorts them for callers that build a manifest from a query.
    """

    name: str
    version: str
    created: str
    created_by: str
    description: str
    release_notes: dict[str, str]
    artifacts: tuple[ManifestArtifact, ...]
    sbom: ManifestSbom | None = None

    def __post_init__(self) -> None:
        check_bundle_name(self.name, "name")
        check_bundle_version(self.version, "version")
        if type(self.created) is not str or not CREATED_RE.fullmatch(self.created):
            _fail("created", "must be a UTC time like 2026-11-22T10:00:00.000Z")
        try:
            datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            _fail("created", "not a real date and time")
        _check_text(self.created_by, "created_by", single_line=True)
        _check_text(self.description, "description")
        object.__setattr__(self, "release_notes", _check_release_notes(self.release_notes))
        artifacts = tuple(self.artifacts)
        object.__setattr__(self, "artifacts", artifacts)
        _check_artifact_list(artifacts)
        if self.sbom is not None and not isinstance(self.sbom, ManifestSbom):
            _fail("sbom", "must be a ManifestSbom")

    @classmethod
    def create(
        cls,
        name: str,
        version: str,
        artifacts: Iterable[ManifestArtifact],
        *,
        created: str | None = None,
        created_by: str = "",
        description: str = "",
        release_notes: Mapping[str, str] | None = None,
        sbom: ManifestSbom | None = None,
    ) -> Manifest:
        """Build a manifest from artifacts in any order; duplicate targets are still refused."""
        return cls(
            name=name,
            version=version,
            created=created or utc_timestamp(),
            created_by=created_by,
            description=description,
            release_notes=dict(release_notes or DEFAULT_RELEASE_NOTES),
            artifacts=tuple(sorted(artifacts, key=lambda a: a.target)),
            sbom=sbom,
        )

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)


def _check_release_notes(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        _fail("release_notes", "must be an object with 'syntax' and 'content'")
    if set(value) != RELEASE_NOTES_FIELDS:
        _fail("release_notes", "must have exactly the fields 'syntax' and 'content'")
    syntax = value["syntax"]
    if syntax not in RELEASE_NOTES_SYNTAXES:
        _fail("release_notes.syntax", f"must be one of {', '.join(RELEASE_NOTES_SYNTAXES)}")
    return {"content": _check_text(value["content"], "release_notes.content"), "syntax": syntax}


def _check_artifact_list(artifacts: tuple[ManifestArtifact, ...]) -> None:
    if len(artifacts) > MAX_ARTIFACTS:
        _fail("artifacts", f"more than {MAX_ARTIFACTS} artifacts")
    for index, artifact in enumerate(artifacts):
        if not isinstance(artifact, ManifestArtifact):
            _fail(f"artifacts[{index}]", "must be a ManifestArtifact")
        if index and artifact.target <= artifacts[index - 1].target:
            problem = "duplicate target" if artifact.target == artifacts[index - 1].target else "not sorted by target"
            _fail(f"artifacts[{index}].target", f"{problem} ({artifact.target!r})")
    # A path cannot be a file and a folder at once; an edge could publish neither.
    targets = {a.target for a in artifacts}
    for index, artifact in enumerate(artifacts):
        parts = artifact.target.split("/")
        for depth in range(2, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in targets:
                _fail(f"artifacts[{index}].target", f"{artifact.target!r} is inside file {folder!r}")


class ArtifactFields(Protocol):
    """A ManifestArtifact's fields, as any record of an artifact (a stored bundle's) has them."""

    @property
    def target(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def sha1(self) -> str: ...
    @property
    def md5(self) -> str: ...
    @property
    def properties(self) -> dict[str, list[str]]: ...


def _artifact_json(a: ArtifactFields) -> dict[str, Any]:
    return {
        "target": a.target,
        "source": a.source,
        "size": a.size,
        "sha256": a.sha256,
        "sha1": a.sha1,
        "md5": a.md5,
        "properties": a.properties,
    }


def _to_json(manifest: Manifest) -> dict[str, Any]:
    body = {
        "format": FORMAT_VERSION,
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "created_by": manifest.created_by,
        "description": manifest.description,
        "release_notes": manifest.release_notes,
        "artifacts": [_artifact_json(a) for a in manifest.artifacts],
    }
    if manifest.sbom is not None:  # absent, not null: a manifest without one keeps its old bytes
        body["sbom"] = {"sha256": manifest.sbom.sha256, "size": manifest.sbom.size}
    return body


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode(manifest: Manifest) -> bytes:
    """The canonical bytes: what is signed, served and compared."""
    return _canonical(_to_json(manifest))


# -- streaming encoder: a manifest of any size, never whole in memory ---------------------

_ARTIFACTS_OPEN = b'{"artifacts":['  # "artifacts" sorts first among the manifest's keys


class ManifestEncoder:
    """The canonical bytes of ``header`` (a manifest without artifacts) with artifacts added one
    at a time, in target order: byte for byte what ``encode`` gives for the whole manifest.

    It refuses, as ``Manifest`` does, artifacts unsorted or twice, a target inside another
    target's file, more than ``MAX_ARTIFACTS`` of them, or more than ``MAX_MANIFEST_BYTES`` in
    all; while holding only the targets that are string prefixes of the last one (a folder
    check needs no more in target order), so a bundle of any size costs the same memory.
    """

    def __init__(self, header: Manifest) -> None:
        if header.artifacts:
            raise ValueError("the header of a streamed manifest holds no artifacts")
        head = encode(header)
        self._suffix = head[len(_ARTIFACTS_OPEN) :]  # '],"created":...}'
        self.count = 0
        self.size = len(head)
        self._last: str | None = None
        self._prefixes: list[str] = []  # earlier targets each a string prefix of the next

    def start(self) -> bytes:
        return _ARTIFACTS_OPEN

    def add(self, artifact: ArtifactFields) -> bytes:
        """The bytes ``artifact`` adds, the comma before it included."""
        where = f"artifacts[{self.count}]"
        checked = _as_manifest_artifact(artifact, where)
        target = checked.target
        if self.count >= MAX_ARTIFACTS:
            _fail("artifacts", f"more than {MAX_ARTIFACTS} artifacts")
        if self._last is not None and target <= self._last:
            problem = "duplicate target" if target == self._last else "not sorted by target"
            _fail(f"{where}.target", f"{problem} ({target!r})")
        while self._prefixes and not target.startswith(self._prefixes[-1]):
            self._prefixes.pop()  # sorted order: no later target starts with it either
        for earlier in self._prefixes:
            if target.startswith(earlier + "/"):
                _fail(f"{where}.target", f"{target!r} is inside file {earlier!r}")
        self._prefixes.append(target)
        data = _canonical(_artifact_json(checked))
        if self.count:
            data = b"," + data
        self.size += len(data)
        if self.size > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge()
        self.count += 1
        self._last = target
        return data

    def finish(self) -> bytes:
        return self._suffix


def _as_manifest_artifact(artifact: ArtifactFields, where: str) -> ManifestArtifact:
    if isinstance(artifact, ManifestArtifact):
        return artifact
    try:
        return ManifestArtifact(
            target=artifact.target,
            source=artifact.source,
            size=artifact.size,
            sha256=artifact.sha256,
            sha1=artifact.sha1,
            md5=artifact.md5,
            properties=artifact.properties,
        )
    except ManifestError as exc:
        raise ManifestError(exc.message.replace(": artifact.", f": {where}.", 1)) from None


def encode_stream(header: Manifest, artifacts: Iterable[ArtifactFields]) -> Iterator[bytes]:
    """``encode`` of ``header`` with ``artifacts`` (sorted by target), a piece at a time."""
    encoder = ManifestEncoder(header)
    yield encoder.start()
    for artifact in artifacts:
        yield encoder.add(artifact)
    yield encoder.finish()


def artifact_bytes(artifact: ArtifactFields) -> int:
    """What one artifact adds to a manifest's canonical bytes, the comma before the next included
    (a little more where its properties still hold duplicate values, which a manifest drops)."""
    return len(_canonical(_artifact_json(artifact))) + 1


def check_limits(header: Manifest, count: int, artifacts_bytes: int) -> None:
    """Refuse, before anything is stored, a bundle whose manifest no node would accept: more than
    MAX_ARTIFACTS artifacts, or over MAX_MANIFEST_BYTES once ``count`` artifacts adding
    ``artifacts_bytes`` (``artifact_bytes`` of each) join ``header``, the manifest without them."""
    if count > MAX_ARTIFACTS:
        _fail("artifacts", f"more than {MAX_ARTIFACTS} artifacts")
    size = len(encode(header)) + max(artifacts_bytes - 1, 0)
    if size > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(
            f"Release bundle manifest would be {size} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes"
        )


def sha256_of(manifest: Manifest) -> str:
    """The ``X-Checksum-Sha256`` of a bundle: the digest of its canonical bytes."""
    return hashlib.sha256(encode(manifest)).hexdigest()


def _fields(
    obj: object, allowed: frozenset[str], where: str, optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        _fail(where, "must be a JSON object")
    missing = sorted(allowed - obj.keys())
    unknown = sorted(obj.keys() - allowed - optional)
    if missing:
        _fail(where, f"missing field(s) {', '.join(missing)}")
    if unknown:
        _fail(where, f"unknown field(s) {', '.join(map(repr, unknown))}")
    return obj


def _artifact_from_json(obj: object, where: str) -> ManifestArtifact:
    fields = _fields(obj, ARTIFACT_FIELDS, where)
    try:
        return ManifestArtifact(**fields)
    except ManifestError as exc:  # name the artifact by its index, as a reader of the JSON sees it
        raise ManifestError(exc.message.replace(": artifact.", f": {where}.", 1)) from None


def _sbom_from_json(obj: object) -> ManifestSbom:
    fields = _fields(obj, SBOM_FIELDS, "sbom")
    return ManifestSbom(sha256=fields["sha256"], size=fields["size"])


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first differing byte, by bisection over memoryviews (compared in C)."""
    va, vb = memoryview(a), memoryview(b)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if va[:mid] == vb[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def decode(data: bytes) -> Manifest:
    """Parse canonical manifest bytes; anything else raises ``ManifestError`` (a 400).

    Strictness is the point: the bytes must be exactly what ``encode`` gives for
    the manifest they describe, so the checks end with a byte comparison.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("decode() takes bytes")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge()
    data = bytes(data)
    try:
        obj = loads(data, floats=False)
    except JsonRefused as exc:
        _fail("JSON", exc.problem)
    fields = _fields(obj, MANIFEST_FIELDS, "manifest", OPTIONAL_MANIFEST_FIELDS)
    if type(fields["format"]) is not int or fields["format"] != FORMAT_VERSION:
        _fail("format", f"unsupported manifest format {fields['format']!r} (this node reads {FORMAT_VERSION})")
    raw_artifacts = fields["artifacts"]
    if not isinstance(raw_artifacts, list):
        _fail("artifacts", "must be a list")
    if len(raw_artifacts) > MAX_ARTIFACTS:
        _fail("artifacts", f"more than {MAX_ARTIFACTS} artifacts")
    manifest = Manifest(
        name=fields["name"],
        version=fields["version"],
        created=fields["created"],
        created_by=fields["created_by"],
        description=fields["description"],
        release_notes=fields["release_notes"],
        artifacts=tuple(_artifact_from_json(a, f"artifacts[{i}]") for i, a in enumerate(raw_artifacts)),
        sbom=_sbom_from_json(fields["sbom"]) if "sbom" in fields else None,
    )
    canonical = encode(manifest)
    if canonical != data:
        offset = _first_difference(canonical, data)
        _fail("bytes", f"not in canonical form (sorted keys, no whitespace); first difference at byte {offset}")
    return manifest
