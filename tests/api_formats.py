"""Values of the string formats the OpenAPI documents name, for schemathesis to draw from.

A format stands for a rule a JSON schema cannot state: a path's names counted in UTF-8
bytes, a CIDR without host bits, a key that parses, a manifest in its canonical
encoding, a bundle spec that selects files. Taught the formats, schemathesis sends valid
requests the services must accept, and still mutates them into invalid ones they must
refuse. Key material comes from real gpg (``KEYS``) and ``cryptography``.
"""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from repository.property_syntax import format_keys, format_properties
from tests.gpg_keys import KeyFactory, TestKey
from wire.manifest import Manifest, ManifestArtifact, encode
from wire.protocol import MANIFEST_MEDIA_TYPE

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
# The file the seeds put in the uploads repo (downloads find it there) and in a source repo,
# which specs select: a spec selecting uploads unmapped would target an edge's uploads repo,
# a 400 whatever the body's shape.
UPLOADS = "artifactory-edge-uploads"
SPEC_SOURCE = "tools-local"


def _fits(text: str, limit: int) -> bool:
    return len(text.encode("utf-8")) <= limit


# Any character but '/', '\' and controls (category Cc); surrogates cannot be UTF-8.
_NAME_CHARS = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\")
NAMES = st.text(_NAME_CHARS, min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and _fits(n, MAX_NAME_BYTES)
)
ARTIFACT_PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join).filter(lambda p: _fits(p, MAX_PATH_BYTES))
REPO_KEYS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True).filter(
    lambda k: k.lower() not in ("api", "ui", "webapp", "list")
)
REPO_PATHS = st.one_of(
    st.just(f"/{UPLOADS}/tools/app.tar.gz"), st.builds(lambda r, p: f"/{r}/{p}", REPO_KEYS, ARTIFACT_PATHS)
)


@st.composite
def _networks(draw: st.DrawFn, *, strict: bool) -> str:
    version = draw(st.sampled_from([4, 6]))
    address = draw(st.ip_addresses(v=version))
    prefix = draw(st.integers(min_value=0, max_value=32 if version == 4 else 128))
    if not strict:
        return f"{address}/{prefix}"
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _plain(cidr: str) -> bool:
    """Not an IPv4-mapped IPv6 network: rules want those written as IPv4."""
    address = ipaddress.ip_network(cidr).network_address
    return not isinstance(address, ipaddress.IPv6Address) or address.ipv4_mapped is None


CIDRS = _networks(strict=True).filter(_plain)
IPS_OR_CIDRS = st.one_of(st.ip_addresses().map(str), _networks(strict=False))


def ed25519_pem() -> str:
    """A new Ed25519 public key, PEM."""
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


ED25519_KEYS = st.sampled_from([ed25519_pem() for _ in range(3)])
_MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30))
AUDIT_TIMES = st.one_of(
    _MOMENTS.map(lambda t: t.strftime("%Y-%m-%d")),
    _MOMENTS.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    _MOMENTS.map(lambda t: str(int(t.replace(tzinfo=UTC).timestamp() * 1000))),
)


def manifest_artifact(target: str, source: str, data: bytes) -> ManifestArtifact:
    """One file of a manifest, with the digests of ``data``."""
    return ManifestArtifact(
        target=target,
        source=source,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
    )


@st.composite
def _manifests(draw: st.DrawFn) -> str:
    data = draw(st.binary(max_size=64))
    drawn = draw(st.lists(ARTIFACT_PATHS, min_size=1, max_size=3, unique=True))
    targets = [t for t in drawn if not any(t.startswith(other + "/") for other in drawn)]  # no file in a file
    artifacts = [manifest_artifact(f"{UPLOADS}-bundles/{t}", f"releases-local/{t}", data) for t in targets]
    name = draw(st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True))
    version = draw(st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
    return encode(Manifest.create(name, version, artifacts, created_by="schemathesis")).decode()


# Any armored block: on a valid case the test signs the manifest itself (no format can say
# "a signature over that other field").
PLACEHOLDER_SIGNATURE = "-----BEGIN PGP SIGNATURE-----\n\niHUEABYKAB0WIQ==\n=AAAA\n-----END PGP SIGNATURE-----\n"
# Specs that select the file the seeds deploy, by pattern and by JFrog CLI's AQL.
BUNDLE_PATTERNS = st.sampled_from(
    [
        f"{SPEC_SOURCE}/tools/app.tar.gz",
        f"{SPEC_SOURCE}/tools/*",
        f"{SPEC_SOURCE}/**",
        f"{SPEC_SOURCE}/*/app.*",
        f"{SPEC_SOURCE}/t?ols/*",
    ]
)
AQLS = st.sampled_from(
    [
        f'items.find({{"repo":"{SPEC_SOURCE}","path":"tools","name":"app.tar.gz"}})',
        f'items.find({{"repo":"{SPEC_SOURCE}","path":{{"$match":"tools*"}}}})',
        f'items.find({{"$and":[{{"repo":"{SPEC_SOURCE}"}},{{"name":{{"$match":"*.gz"}}}}]}}).include("name")',
    ]
)
# Every input has a group 1, so every output may use it; outputs make a valid repo/path.
MAPPING_INPUTS = st.sampled_from(["(.*)", f"{SPEC_SOURCE}/(.*)", r"([^/]+/tools/.+)", r"(?<all>[^/]+/.+)"])
MAPPING_OUTPUTS = st.sampled_from(["$1", "mapped-local/$1", "${1}", "mapped-local/copy/$1"])
PRINTABLE = st.text(min_size=1, max_size=40).filter(str.isprintable)
# Property strings and key lists as clients write them (``repository.property_syntax``).
_PROPERTY_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=20)
_PROPERTY_KEYS = _PROPERTY_TEXT.filter(bool)
PROPERTY_STRINGS = st.dictionaries(
    _PROPERTY_KEYS, st.lists(_PROPERTY_TEXT, min_size=1, max_size=3), min_size=1, max_size=5
).map(format_properties)
PROPERTY_KEY_LISTS = st.lists(_PROPERTY_KEYS, min_size=1, max_size=5).map(format_keys)
_OFFSETS = st.integers(min_value=0, max_value=10**19 - 1)
CONTENT_RANGES = st.builds(lambda a, b, c: f"bytes {a}-{b}/{c}", _OFFSETS, _OFFSETS, _OFFSETS)


@dataclass
class Keys:
    """Armored OpenPGP keys made with real gpg, once, when first asked for (schemathesis draws
    some examples while collecting the tests); the first key is the one edges are told to trust."""

    factory: KeyFactory | None = None
    keys: list[TestKey] = field(default_factory=list)

    def pool(self) -> list[TestKey]:
        if self.factory is None:
            self.factory = KeyFactory()
            atexit.register(self.factory.close)
            self.keys = [self.factory.make_key(f"Schemathesis {i} <st{i}@example.com>") for i in range(3)]
        return self.keys

    def sign(self, data: bytes) -> bytes:
        signer = self.pool()[0]
        assert self.factory is not None
        return self.factory.sign(signer, data)


KEYS = Keys()


def _from_pool(armored: Callable[[TestKey], str]) -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=2).map(lambda i: armored(KEYS.pool()[i]))


def register() -> None:
    """Make the formats known to schemathesis (once per process)."""
    formats = {
        "artifact-path": ARTIFACT_PATHS,
        "repo-path": REPO_PATHS,
        "cidr": CIDRS,
        "ip-or-cidr": IPS_OR_CIDRS,
        "ed25519-public-key": ED25519_KEYS,
        "audit-time": AUDIT_TIMES,
        "canonical-manifest": _manifests(),
        "pgp-signature": st.just(PLACEHOLDER_SIGNATURE),
        "pgp-public-key": _from_pool(lambda key: key.public),
        "pgp-private-key": _from_pool(lambda key: key.private),
        "bundle-pattern": BUNDLE_PATTERNS,
        "aql": AQLS,
        "mapping-input": MAPPING_INPUTS,
        "mapping-output": MAPPING_OUTPUTS,
        "printable": PRINTABLE,
        "property-string": PROPERTY_STRINGS,
        "property-keys": PROPERTY_KEY_LISTS,
        "content-range": CONTENT_RANGES,
    }
    for name, strategy in formats.items():
        schemathesis.openapi.format(name, strategy)
    schemathesis.serializer(MANIFEST_MEDIA_TYPE)(_manifest_body)


def _manifest_body(ctx: object, value: object) -> bytes:
    """A manifest start body is the manifest's own bytes, not a JSON string holding them."""
    return value.encode("utf-8") if isinstance(value, str) else json.dumps(value).encode()
