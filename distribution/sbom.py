"""A bundle's CycloneDX SBOM, built with ``cyclonedx-python-lib`` (JSON, spec 1.6).

The bundle is the root (metadata) component; every file is a ``file`` component with its
sha256, sha1 and md5, its size and source as properties, and a ``pkg:generic`` purl (the
target's folders as the namespace, the file name as the name, the bundle version as the
version, the sha256 as the ``checksum`` qualifier; ``packageurl-python`` percent-encodes it);
the root depends on every file. A CycloneDX SBOM the bundle contains (``*.cdx.json``,
``bom.json`` or ``sbom.json`` whose JSON says ``"bomFormat": "CycloneDX"``) is merged in:
its subject and its components are nested under that file's component, their ``bom-ref``s
prefixed with the file's so that no two SBOMs' refs collide. Its dependency graph is not
carried over: the file's own document, served with the bundle, still has it.

The same bundle gives the same bytes: the serial number is a UUID derived from the
bundle's name and version, the timestamp is the manifest's ``created``, and every
``bom-ref`` is derived from a target path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from repository.errors import BadRequest
from wire.manifest import ArtifactFields

# Names under which a bundle's file is read as a CycloneDX SBOM of its own (if its JSON says so).
EMBEDDED_SUFFIX = ".cdx.json"
EMBEDDED_NAMES = frozenset({"bom.json", "sbom.json"})
# The fewest bytes one file's component and dependency entry take in the document (three
# digests and a purl with a fourth): a bundle whose files alone would pass the cap is refused
# before a component is made.
MIN_COMPONENT_BYTES = 300
# Serial numbers: uuid5 of "name/version" in this namespace.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:release-bundle:sbom")
PROPERTY_PREFIX = "release-bundle:"


class SbomTooLarge(BadRequest):
    """The SBOM a bundle would get is over ``sbom_max_bytes``: the bundle is refused, nothing stored."""


class EmbeddedSbomRefused(BadRequest):
    """A file of the bundle named like a CycloneDX SBOM that cannot be merged (too large, or not readable)."""


@dataclass(frozen=True)
class BundleIdentity:
    name: str
    version: str
    created: int  # ms since the epoch: the manifest's ``created``


def looks_embedded(target: str) -> bool:
    """Whether a file's name says it may be a CycloneDX SBOM (its content decides)."""
    name = target.rsplit("/", 1)[-1].lower()
    return name.endswith(EMBEDDED_SUFFIX) or name in EMBEDDED_NAMES


def check_component_budget(count: int, max_bytes: int) -> None:
    """Refuse, before building anything, a bundle whose files alone would pass ``max_bytes``."""
    if count * MIN_COMPONENT_BYTES > max_bytes:
        raise SbomTooLarge(
            f"The bundle's SBOM would take at least {count * MIN_COMPONENT_BYTES} bytes for its {count} files,"
            f" over the limit of {max_bytes} bytes (setting sbom_max_bytes)"
        )


def file_purl(target: str, version: str, sha256: str) -> PackageURL:
    """``pkg:generic/<repo>/<folders>/<file name>@<bundle version>?checksum=sha256:<digest>``."""
    folders, _, name = target.rpartition("/")
    checksum = {"checksum": f"sha256:{sha256}"}
    return PackageURL("generic", namespace=folders, name=name, version=version, qualifiers=checksum)


def _file_component(artifact: ArtifactFields, version: str) -> Component:
    return Component(
        type=ComponentType.FILE,
        name=artifact.target,
        version=version,
        bom_ref=f"file:{artifact.target}",
        purl=file_purl(artifact.target, version, artifact.sha256),
        hashes=[
            HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256),
            HashType(alg=HashAlgorithm.SHA_1, content=artifact.sha1),
            HashType(alg=HashAlgorithm.MD5, content=artifact.md5),
        ],
        properties=[
            Property(name=PROPERTY_PREFIX + "size", value=str(artifact.size)),
            Property(name=PROPERTY_PREFIX + "source", value=artifact.source),
        ],
    )


def parse_embedded(target: str, data: bytes) -> Bom | None:
    """The SBOM in a file named like one, or None when its content is not a CycloneDX document
    (a ``bom.json`` of another tool is an ordinary file). One that says it is CycloneDX but
    that the library cannot read is refused: merging part of it would misreport the bundle."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("bomFormat") != "CycloneDX":
        return None
    try:
        return Bom.from_json(obj)  # type: ignore[attr-defined]
    except Exception as exc:  # the library raises many kinds for a document it cannot read
        raise EmbeddedSbomRefused(
            f"Embedded SBOM {target} is not a CycloneDX document this service can read: {exc}"
        ) from None


def _renamed(component: Component, prefix: str) -> Component:
    """``component`` and its nested components with ``prefix`` before each bom-ref."""
    component.bom_ref.value = f"{prefix}{component.bom_ref.value or component.name}"
    for nested in component.components:
        _renamed(nested, prefix)
    return component


def _merge(component: Component, embedded: Bom) -> None:
    prefix = f"{component.bom_ref.value}#"
    subject = embedded.metadata.component
    if subject is not None:
        component.components.add(_renamed(subject, prefix))
    for nested in embedded.components:
        component.components.add(_renamed(nested, prefix))


def _depend(bom: Bom, root: Component, files: list[Component]) -> None:
    """The dependency graph ``Bom.register_dependency`` and ``Bom.validate`` would make (the root
    on every file, each file with an entry of its own), made in one pass: the library finds each
    entry by a linear search, which costs minutes for 10,000 files. Its ``validate`` (deprecated,
    called by every output) would do that search again for every component, so this Bom's is
    replaced by a no-op; the graph is whole by construction."""
    bom.dependencies.add(Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=f.bom_ref) for f in files]))
    bom.dependencies.update(Dependency(ref=f.bom_ref) for f in files)
    bom.validate = lambda: True  # type: ignore[method-assign]


def build_sbom(
    bundle: BundleIdentity, artifacts: Iterable[ArtifactFields], embedded: Mapping[str, Bom], max_bytes: int
) -> bytes:
    """The SBOM's bytes, at most ``max_bytes`` of them (else ``SbomTooLarge``). ``embedded`` maps
    a target to the SBOM that file holds. The document is made once as the library's objects,
    then as one string, then as bytes, the cap bounding each: the service runs this in a
    process of its own (``distribution.sbom_worker``)."""
    bom = Bom()
    bom.serial_number = uuid.uuid5(SERIAL_NAMESPACE, f"{bundle.name}/{bundle.version}")
    bom.metadata.timestamp = datetime.fromtimestamp(bundle.created / 1000, UTC)
    root = Component(
        type=ComponentType.APPLICATION,
        name=bundle.name,
        version=bundle.version,
        bom_ref=f"bundle:{bundle.name}@{bundle.version}",
        purl=PackageURL("generic", name=bundle.name, version=bundle.version),
        description="Release bundle",
    )
    bom.metadata.component = root
    files = []
    for artifact in artifacts:
        component = _file_component(artifact, bundle.version)
        if artifact.target in embedded:
            _merge(component, embedded[artifact.target])
        files.append(component)
    bom.components.update(files)
    _depend(bom, root, files)
    text = JsonV1Dot6(bom).output_as_string()
    del bom, files
    data = text.encode("utf-8")
    del text
    if len(data) > max_bytes:
        raise SbomTooLarge(
            f"The bundle's SBOM would be {len(data)} bytes, over the limit of {max_bytes} bytes"
            " (setting sbom_max_bytes)"
        )
    return data
