"""The manifest's optional ``sbom`` field: signed with the rest, additive, and read back exactly."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_manifest import CREATED, artifact, canonical, refused, sample
from wire.manifest import MAX_SIZE, Manifest, ManifestError, ManifestSbom, decode, encode
from wire.manifest_reader import ManifestReader

SBOM_SHA256 = hashlib.sha256(b"sbom").hexdigest()


def with_sbom(manifest: Manifest, sbom: ManifestSbom | None) -> Manifest:
    return Manifest.create(
        manifest.name,
        manifest.version,
        manifest.artifacts,
        created=manifest.created,
        created_by=manifest.created_by,
        description=manifest.description,
        release_notes=manifest.release_notes,
        sbom=sbom,
    )


def test_a_manifest_without_an_sbom_has_no_sbom_field_and_its_bytes_are_unchanged() -> None:
    manifest = sample()
    data = encode(manifest)
    assert b"sbom" not in data
    assert data == canonical(json.loads(data))
    assert set(json.loads(data)) == {
        "format", "name", "version", "created", "created_by", "description", "release_notes", "artifacts",
    }  # fmt: skip
    assert decode(data) == manifest and decode(data).sbom is None


def test_a_manifest_with_an_sbom_carries_its_sha256_and_size_and_reads_back() -> None:
    manifest = with_sbom(sample(), ManifestSbom(SBOM_SHA256, 1234))
    data = encode(manifest)
    assert json.loads(data)["sbom"] == {"sha256": SBOM_SHA256, "size": 1234}
    assert decode(data) == manifest
    assert encode(decode(data)) == data


def test_the_sbom_field_changes_the_signed_bytes() -> None:
    plain, with_one = encode(sample()), encode(with_sbom(sample(), ManifestSbom(SBOM_SHA256, 1)))
    assert plain != with_one
    assert hashlib.sha256(plain).hexdigest() != hashlib.sha256(with_one).hexdigest()


@pytest.mark.parametrize(
    ("sbom", "reason"),
    [
        ({"sha256": SBOM_SHA256.upper(), "size": 1}, "sbom.sha256: must be 64 lowercase hex"),
        ({"sha256": SBOM_SHA256[:63], "size": 1}, "sbom.sha256: must be 64 lowercase hex"),
        ({"sha256": SBOM_SHA256, "size": 0}, "sbom.size: must be an integer from 1"),
        ({"sha256": SBOM_SHA256, "size": MAX_SIZE + 1}, "sbom.size: must be an integer from 1"),
        ({"sha256": SBOM_SHA256, "size": "1"}, "sbom.size: must be an integer from 1"),
        ({"sha256": SBOM_SHA256}, "sbom: missing field(s) size"),
        ({"sha256": SBOM_SHA256, "size": 1, "url": "x"}, "sbom: unknown field(s) 'url'"),
        (None, "sbom: must be a JSON object"),
        ([SBOM_SHA256, 1], "sbom: must be a JSON object"),
    ],
)
def test_a_malformed_sbom_field_is_refused(sbom: object, reason: str) -> None:
    obj = json.loads(encode(sample()))
    obj["sbom"] = sbom
    assert reason in refused(canonical(obj))


def test_an_sbom_field_with_unsorted_keys_is_refused() -> None:
    data = encode(with_sbom(sample(), ManifestSbom(SBOM_SHA256, 5)))
    field = f'{{"sha256":"{SBOM_SHA256}","size":5}}'.encode()
    swapped = data.replace(field, f'{{"size":5,"sha256":"{SBOM_SHA256}"}}'.encode())
    assert swapped != data
    assert "not in canonical form" in refused(swapped)


def test_the_paged_reader_reads_the_sbom_field_in_the_header() -> None:
    manifest = with_sbom(sample("r/a", "r/b", "r/c"), ManifestSbom(SBOM_SHA256, 77))
    reader = ManifestReader(io.BytesIO(encode(manifest)), page=2, chunk=16)
    pages = list(reader.pages())
    assert [a.target for page in pages for a in page] == ["r/a", "r/b", "r/c"]
    assert reader.summary is not None and reader.summary.header.sbom == ManifestSbom(SBOM_SHA256, 77)


def test_the_constructor_refuses_an_sbom_that_is_not_a_manifest_sbom() -> None:
    with pytest.raises(ManifestError, match="sbom: must be a ManifestSbom"):
        with_sbom(sample(), {"sha256": SBOM_SHA256, "size": 1})  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    size=st.integers(min_value=1, max_value=MAX_SIZE),
    targets=st.lists(st.sampled_from(["r/a", "r/b/c", "s/d", "s/e"]), unique=True, max_size=4),
    has_sbom=st.booleans(),
)
def test_any_manifest_with_or_without_an_sbom_round_trips_byte_for_byte(
    sha256: str, size: int, targets: list[str], has_sbom: bool
) -> None:
    sbom = ManifestSbom(sha256, size) if has_sbom else None
    manifest = Manifest.create("app", "1", [artifact(t) for t in targets], created=CREATED, sbom=sbom)
    data = encode(manifest)
    assert decode(data) == manifest
    assert encode(decode(data)) == data
    assert (b'"sbom":' in data) is has_sbom
    reader = ManifestReader(io.BytesIO(data), page=1, chunk=8)
    assert [a for page in reader.pages() for a in page] == list(manifest.artifacts)
    assert reader.summary is not None and reader.summary.header.sbom == sbom
