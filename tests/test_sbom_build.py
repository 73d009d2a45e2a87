"""A bundle's CycloneDX SBOM as the builder makes it: valid against the schema, every file with its
digests and a purl a purl parser reads back, embedded SBOMs merged, the same bytes every time,
and a size cap that holds at its edges."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from distribution.sbom import (
    MIN_COMPONENT_BYTES,
    BundleIdentity,
    EmbeddedSbomRefused,
    SbomTooLarge,
    build_sbom,
    check_component_budget,
    looks_embedded,
    parse_embedded,
)
from wire.manifest import ManifestArtifact
from wire.timestamps import iso

BUNDLE = BundleIdentity("app", "1.4.0+build.7", 1_795_000_000_123)
UNLIMITED = 1 << 30
# names a purl must percent-encode: spaces, reserved characters, non-ASCII
AWKWARD = (
    "releases-local/dir with space/a#b?c@d%e+f.bin",
    "releases-local/ünïcødé/файл 名前.txt",
    "releases-local/semi;colon/x=y&z.tar.gz",
)


def artifact(target: str, data: bytes = b"x", source: str | None = None) -> ManifestArtifact:
    return ManifestArtifact(
        target=target,
        source=source or target,
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
    )


def valid(data: bytes) -> dict[str, Any]:
    """The document, once the library's strict validator for spec 1.6 has found no error in it."""
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode("utf-8"))
    assert errors is None, errors
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def embedded_sbom(**extra: Any) -> bytes:
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "application", "name": "service", "bom-ref": "root"}},
        "components": [
            {"type": "library", "name": "libfoo", "version": "2.1", "bom-ref": "libfoo", "purl": "pkg:pypi/libfoo@2.1"},
            {"type": "library", "name": "libbar", "version": "0.3", "bom-ref": "libbar"},
        ],
        "dependencies": [{"ref": "root", "dependsOn": ["libfoo", "libbar"]}],
        **extra,
    }
    return json.dumps(doc).encode()


def test_an_empty_bundle_gets_a_valid_sbom_with_only_the_bundle_as_its_subject() -> None:
    doc = valid(build_sbom(BUNDLE, [], {}, UNLIMITED))
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    root = doc["metadata"]["component"]
    assert (root["name"], root["version"]) == ("app", "1.4.0+build.7")
    assert PackageURL.from_string(root["purl"]).to_dict()["version"] == "1.4.0+build.7"
    assert doc.get("components", []) == []


def test_one_file_is_a_component_with_its_digests_size_and_purl_and_the_bundle_depends_on_it() -> None:
    data = b"app binary"
    doc = valid(
        build_sbom(BUNDLE, [artifact("releases-local/app/app.bin", data, "src-local/b/app.bin")], {}, UNLIMITED)
    )
    [component] = doc["components"]
    assert component["type"] == "file" and component["name"] == "releases-local/app/app.bin"
    assert {h["alg"]: h["content"] for h in component["hashes"]} == {
        "SHA-256": hashlib.sha256(data).hexdigest(),
        "SHA-1": hashlib.sha1(data).hexdigest(),
        "MD5": hashlib.md5(data).hexdigest(),
    }
    assert {p["name"]: p["value"] for p in component["properties"]} == {
        "release-bundle:size": str(len(data)),
        "release-bundle:source": "src-local/b/app.bin",
    }
    purl = PackageURL.from_string(component["purl"])
    assert (purl.type, purl.namespace, purl.name, purl.version) == (
        "generic",
        "releases-local/app",
        "app.bin",
        "1.4.0+build.7",
    )
    assert purl.qualifiers == {"checksum": "sha256:" + hashlib.sha256(data).hexdigest()}
    root_ref = doc["metadata"]["component"]["bom-ref"]
    assert {"ref": root_ref, "dependsOn": [component["bom-ref"]]} in doc["dependencies"]


def test_unicode_and_reserved_characters_in_file_names_are_percent_encoded_in_purls_and_read_back() -> None:
    doc = valid(build_sbom(BUNDLE, [artifact(t, t.encode()) for t in AWKWARD], {}, UNLIMITED))
    by_name = {c["name"]: c for c in doc["components"]}
    assert set(by_name) == set(AWKWARD)
    for target, component in by_name.items():
        text = component["purl"]
        assert " " not in text and "#" not in text and text.count("?") == 1  # no subpath; "?" opens qualifiers
        assert all(ord(ch) < 128 for ch in text)  # every non-ASCII character percent-encoded
        purl = PackageURL.from_string(text)
        folders, _, name = target.rpartition("/")
        assert (purl.namespace, purl.name) == (folders, name)
    assert "a%23b%3Fc%40d%25e%2Bf.bin" in by_name[AWKWARD[0]]["purl"]


def test_an_embedded_cyclonedx_sbom_is_merged_under_its_file_with_refs_made_unique() -> None:
    sbom_file = artifact("releases-local/app/service.cdx.json", embedded_sbom())
    other = artifact("releases-local/app/lib/bom.json", embedded_sbom())  # the same refs again, elsewhere
    embedded = {a.target: parse_embedded(a.target, embedded_sbom()) for a in (sbom_file, other)}
    doc = valid(
        build_sbom(
            BUNDLE,
            [sbom_file, other, artifact("releases-local/app/app.bin")],
            {t: e for t, e in embedded.items() if e},
            UNLIMITED,
        )
    )
    by_name = {c["name"]: c for c in doc["components"]}
    nested = {c["name"]: c for c in by_name["releases-local/app/service.cdx.json"]["components"]}
    assert set(nested) == {"service", "libfoo", "libbar"}
    assert nested["libfoo"]["purl"] == "pkg:pypi/libfoo@2.1"
    refs = [c["bom-ref"] for c in doc["components"]]
    refs += [n["bom-ref"] for c in doc["components"] for n in c.get("components", [])]
    assert len(refs) == len(set(refs)) == 3 + 6
    assert "components" not in by_name["releases-local/app/app.bin"]


@pytest.mark.parametrize(
    ("target", "data"),
    [
        ("r/bom.json", b'{"bomFormat": "SPDX"}'),  # another tool's bom.json: an ordinary file
        ("r/sbom.json", b"not json at all"),
        ("r/x.cdx.json", b"[1, 2]"),
    ],
)
def test_a_file_named_like_an_sbom_whose_content_is_not_cyclonedx_stays_an_ordinary_file(
    target: str, data: bytes
) -> None:
    assert looks_embedded(target)
    assert parse_embedded(target, data) is None


def test_an_embedded_document_that_claims_cyclonedx_but_cannot_be_read_is_refused_with_its_name() -> None:
    with pytest.raises(EmbeddedSbomRefused, match="releases-local/bad.cdx.json") as caught:
        parse_embedded("releases-local/bad.cdx.json", embedded_sbom(components="not a list"))
    assert caught.value.status == 400


def test_only_sbom_names_are_read_for_merging() -> None:
    assert [looks_embedded(t) for t in ("r/a.cdx.json", "r/A.CDX.JSON", "r/bom.json", "r/x/sbom.json")] == [True] * 4
    assert [looks_embedded(t) for t in ("r/bom.json.gz", "r/mybom.json", "r/cdx.json", "r/sbom.xml")] == [False] * 4


def test_the_same_bundle_gives_the_same_bytes_with_a_serial_number_and_time_from_the_bundle() -> None:
    files = [artifact(t, t.encode()) for t in AWKWARD]
    first = build_sbom(BUNDLE, files, {}, UNLIMITED)
    assert build_sbom(BUNDLE, list(reversed(files)), {}, UNLIMITED) == first
    doc = json.loads(first)
    stamp = datetime.fromisoformat(doc["metadata"]["timestamp"])
    assert stamp == datetime.fromisoformat(iso(BUNDLE.created).replace("Z", "+00:00"))  # the manifest's created
    other = json.loads(build_sbom(BundleIdentity("app", "1.4.1", BUNDLE.created), files, {}, UNLIMITED))
    assert doc["serialNumber"].startswith("urn:uuid:") and other["serialNumber"] != doc["serialNumber"]


def test_the_size_cap_refuses_one_byte_over_and_accepts_the_limit_and_one_under() -> None:
    files = [artifact(t, t.encode()) for t in AWKWARD]
    size = len(build_sbom(BUNDLE, files, {}, UNLIMITED))
    assert len(build_sbom(BUNDLE, files, {}, size + 1)) == size
    assert len(build_sbom(BUNDLE, files, {}, size)) == size
    with pytest.raises(SbomTooLarge, match=f"would be {size} bytes, over the limit of {size - 1} bytes") as caught:
        build_sbom(BUNDLE, files, {}, size - 1)
    assert caught.value.status == 400


def test_a_bundle_whose_files_alone_pass_the_cap_is_refused_before_anything_is_built() -> None:
    check_component_budget(0, 1)
    check_component_budget(10, 10 * MIN_COMPONENT_BYTES)
    with pytest.raises(SbomTooLarge, match="sbom_max_bytes"):
        check_component_budget(10, 10 * MIN_COMPONENT_BYTES - 1)
