"""The manifest wire contract: one canonical byte form, and a decoder that accepts only it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import manifest as manifest_module
from wire.errors import InvalidInput
from wire.manifest import (
    BUNDLE_NAME_RE,
    BUNDLE_VERSION_RE,
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestArtifact,
    ManifestError,
    ManifestTooLarge,
    decode,
    encode,
    sha256_of,
)
from wire.timestamps import utc_timestamp

SHA256 = hashlib.sha256(b"app").hexdigest()
SHA1 = hashlib.sha1(b"app").hexdigest()
MD5 = hashlib.md5(b"app").hexdigest()
CREATED = "2026-11-22T10:00:00.000Z"


def artifact(target: str, **overrides: Any) -> ManifestArtifact:
    fields: dict[str, Any] = {
        "target": target,
        "source": "releases-local/" + target.partition("/")[2],
        "size": 3,
        "sha256": SHA256,
        "sha1": SHA1,
        "md5": MD5,
        "properties": {},
    }
    return ManifestArtifact(**{**fields, **overrides})


def sample(*targets: str) -> Manifest:
    return Manifest.create(
        "app",
        "1.4.0",
        [artifact(t) for t in targets or ("edge-repo/app/1.4.0/app.tar.gz",)],
        created=CREATED,
        created_by="release-manager",
        description="App 1.4.0",
        release_notes={"syntax": "markdown", "content": "# Fixed"},
    )


def as_json(manifest: Manifest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(encode(manifest))
    return loaded


def canonical(obj: Any) -> bytes:
    """Canonical bytes for a hand-edited JSON object, so a test changes one thing only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def refused(data: bytes) -> str:
    with pytest.raises(ManifestError) as caught:
        decode(data)
    return caught.value.message


def test_a_manifest_round_trips_through_its_canonical_bytes() -> None:
    original = sample("edge-repo/b.bin", "edge-repo/a/c.bin")
    assert decode(encode(original)) == original
    assert [a.target for a in original.artifacts] == ["edge-repo/a/c.bin", "edge-repo/b.bin"]


def test_canonical_bytes_have_sorted_keys_no_whitespace_and_a_format_version() -> None:
    one = Manifest.create(
        "app",
        "1.0",
        [artifact("r/a.bin", properties={"os": ["linux"]})],
        created=CREATED,
        created_by="ci",
        description="d",
    )
    expected = (
        f'{{"artifacts":[{{"md5":"{MD5}","properties":{{"os":["linux"]}},"sha1":"{SHA1}","sha256":"{SHA256}",'
        f'"size":3,"source":"releases-local/a.bin","target":"r/a.bin"}}],"created":"{CREATED}","created_by":"ci",'
        '"description":"d","format":1,"name":"app","release_notes":{"content":"","syntax":"plain_text"},'
        '"version":"1.0"}'
    )
    assert encode(one) == expected.encode()
    assert sha256_of(one) == hashlib.sha256(expected.encode()).hexdigest()


def test_non_ascii_text_survives_as_raw_utf8() -> None:
    original = Manifest.create(
        "app",
        "1.0",
        [artifact("edge-repo/données/naïve-日本.bin", properties={"clé": ["välue", "ünï"]})],
        created=CREATED,
        created_by="Zoë",
        description="Ünïcödé ✓ 🚀",
    )
    data = encode(original)
    assert "naïve-日本".encode() in data and "🚀".encode() in data
    assert b"\\u" not in data
    assert decode(data) == original


def test_a_semver_version_with_build_metadata_round_trips() -> None:
    versioned = Manifest.create("app", "1.4.0+build.7", [artifact("r/a.bin")], created=CREATED)
    assert decode(encode(versioned)).version == "1.4.0+build.7"


def test_properties_are_normalised_to_sorted_keys_and_sorted_unique_values() -> None:
    item = artifact("r/a.bin", properties={"b": ["2", "1", "2"], "a": ["x"]})
    assert list(item.properties) == ["a", "b"]
    assert item.properties["b"] == ["1", "2"]


def test_create_sorts_artifacts_but_the_constructor_refuses_them_unsorted() -> None:
    ordered = sample("r/b.bin", "r/a.bin")
    assert [a.target for a in ordered.artifacts] == ["r/a.bin", "r/b.bin"]
    with pytest.raises(ManifestError, match="not sorted by target"):
        Manifest(
            name="app",
            version="1.0",
            created=CREATED,
            created_by="",
            description="",
            release_notes={"syntax": "plain_text", "content": ""},
            artifacts=(artifact("r/b.bin"), artifact("r/a.bin")),
        )


def test_two_artifacts_with_one_target_are_refused() -> None:
    with pytest.raises(ManifestError, match="duplicate target"):
        sample("r/a.bin", "r/a.bin")


def test_a_target_that_is_also_a_folder_of_another_is_refused() -> None:
    with pytest.raises(ManifestError, match="inside file 'r/a'"):
        sample("r/a", "r/a-b", "r/a/b.bin")


def test_a_manifest_error_is_a_400_of_the_wire_contract() -> None:
    error = ManifestError("x")
    assert isinstance(error, InvalidInput) and error.status == 400
    assert ManifestTooLarge().status == 413


def test_times_are_written_in_utc_with_milliseconds() -> None:
    assert len(utc_timestamp()) == len(CREATED)
    assert utc_timestamp().endswith("Z")


# -- decoding refuses everything but the canonical form -----------------------------

GOOD = encode(sample())


@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        (b'"size":3.0', "floats are not allowed"),
        (b'"size":1e3', "floats are not allowed"),
        (b'"size":NaN', "NaN is not allowed"),
        (b'"size":Infinity', "Infinity is not allowed"),
        (b'"size":-Infinity', "-Infinity is not allowed"),
        (b'"size":true', "size: must be an integer"),
        (b'"size":-3', "size: must be an integer from 0"),
        (b'"size":"3"', "size: must be an integer"),
        (b'"size":-0', "not in canonical form"),
        (b'"size":03', "JSON"),
    ],
)
def test_numbers_must_be_plain_non_negative_integers(spelling: bytes, reason: str) -> None:
    data = GOOD.replace(b'"size":3', spelling)
    assert data != GOOD
    assert reason in refused(data)


def test_duplicate_keys_are_refused_even_with_equal_values() -> None:
    data = GOOD.replace(b'"name":"app"', b'"name":"app","name":"app"')
    assert "duplicate key 'name'" in refused(data)


def test_pretty_printed_json_is_refused() -> None:
    pretty = json.dumps(as_json(sample()), sort_keys=True, indent=2, ensure_ascii=False).encode()
    assert "not in canonical form" in refused(pretty)


def test_insignificant_whitespace_is_refused() -> None:
    assert "not in canonical form" in refused(GOOD.replace(b'"name":"app"', b'"name": "app"'))
    assert "not in canonical form" in refused(GOOD + b"\n")


def test_unsorted_keys_are_refused() -> None:
    unsorted = json.dumps(as_json(sample()), separators=(",", ":"), ensure_ascii=False)
    reordered = json.loads(unsorted)
    reordered = {"version": reordered.pop("version"), **reordered}
    data = json.dumps(reordered, separators=(",", ":"), ensure_ascii=False).encode()
    assert "not in canonical form" in refused(data)


def test_escaped_non_ascii_is_not_the_canonical_spelling() -> None:
    obj = as_json(sample())
    obj["description"] = "café"
    escaped = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert "not in canonical form" in refused(escaped)
    assert decode(canonical(obj)).description == "café"


def test_unsorted_property_values_are_refused() -> None:
    obj = as_json(sample())
    obj["artifacts"][0]["properties"] = {"os": ["linux", "darwin"]}
    assert "not in canonical form" in refused(canonical(obj))


@pytest.mark.parametrize("targets", [["r/b.bin", "r/a.bin"], ["r/a.bin", "r/a.bin"]])
def test_unsorted_or_duplicate_targets_are_refused(targets: list[str]) -> None:
    obj = as_json(sample())
    obj["artifacts"] = [dict(obj["artifacts"][0], target=t) for t in targets]
    assert "artifacts[1].target" in refused(canonical(obj))


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("r/../etc/passwd", "'..' segment"),
        ("r/a/./b", "'.' or '..' segment"),
        ("/etc/passwd", "Invalid repository key"),
        ("r//etc/passwd", "absolute paths"),
        ("r/a\x00b", "control characters"),
        ("r/a\\b", "backslash"),
        ("r/a//b", "empty"),
        ("r", "must be 'repo/path'"),
        ("api/a.bin", "Invalid repository key"),
        ("r/" + "a" * 300, "too long"),
    ],
)
def test_unsafe_target_paths_are_refused(target: str, reason: str) -> None:
    obj = as_json(sample())
    obj["artifacts"][0]["target"] = target
    message = refused(canonical(obj))
    assert "artifacts[0].target" in message and reason in message


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("sha256", SHA256[:-1], "64 lowercase hex"),
        ("sha256", SHA256.upper(), "64 lowercase hex"),
        ("sha1", SHA1 + "0", "40 lowercase hex"),
        ("md5", "g" * 32, "32 lowercase hex"),
        ("md5", 5, "32 lowercase hex"),
    ],
)
def test_digests_must_be_lowercase_hex_of_the_right_length(field: str, value: Any, reason: str) -> None:
    obj = as_json(sample())
    obj["artifacts"][0][field] = value
    assert f"artifacts[0].{field}" in refused(canonical(obj))
    assert reason in refused(canonical(obj))


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("extra",), 1, "unknown field(s) 'extra'"),
        (("artifacts", 0, "signed_by"), "x", "artifacts[0]: unknown field(s) 'signed_by'"),
        (("release_notes", "extra"), "x", "release_notes: must have exactly"),
        (("format",), 2, "unsupported manifest format 2"),
        (("format",), True, "unsupported manifest format True"),
        (("name",), "my app", "name:"),
        (("version",), "x" * 129, "version:"),
        (("version",), "-1.0", "version:"),
        (("created",), "2026-11-22T10:00:00Z", "created:"),
        (("created",), "2026-02-30T10:00:00.000Z", "not a real date"),
        (("created_by",), "ci\nforged log line", "control characters"),
        (("description",), 7, "description: must be a string"),
        (("release_notes", "syntax"), "html", "release_notes.syntax"),
        (("artifacts", 0, "properties"), {"os": "linux"}, "must be a list of strings"),
        (("artifacts", 0, "properties"), {"os": [1]}, "must be a string"),
        (("artifacts",), {}, "artifacts: must be a list"),
    ],
)
def test_wrong_or_unknown_fields_are_refused(path: tuple[Any, ...], value: Any, reason: str) -> None:
    obj = as_json(sample())
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert reason in refused(canonical(obj))


@pytest.mark.parametrize("field", ["name", "created", "artifacts", "format"])
def test_missing_fields_are_refused(field: str) -> None:
    obj = as_json(sample())
    del obj[field]
    assert f"missing field(s) {field}" in refused(canonical(obj))


def test_a_missing_artifact_field_is_refused() -> None:
    obj = as_json(sample())
    del obj["artifacts"][0]["sha1"]
    assert "artifacts[0]: missing field(s) sha1" in refused(canonical(obj))


def test_invalid_utf8_is_refused() -> None:
    data = GOOD.replace(b'"description":"App 1.4.0"', b'"description":"App \xff"')
    assert "not valid UTF-8" in refused(data)


def test_a_lone_surrogate_is_refused() -> None:
    data = GOOD.replace(b'"description":"App 1.4.0"', b'"description":"\\ud800"')
    assert "lone surrogate" in refused(data)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"null", b"\xef\xbb\xbf{}", b"[" * 100_000])
def test_input_that_is_not_a_json_object_is_refused(data: bytes) -> None:
    refused(data)


def test_an_oversized_manifest_is_refused_before_parsing() -> None:
    with pytest.raises(ManifestTooLarge) as caught:
        decode(b" " * (MAX_MANIFEST_BYTES + 1))
    assert caught.value.status == 413


def test_more_artifacts_than_the_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(sample("r/a.bin", "r/b.bin", "r/c.bin"))
    monkeypatch.setattr(manifest_module, "MAX_ARTIFACTS", 2)
    assert "more than 2 artifacts" in refused(data)


def test_a_manifest_of_ten_thousand_artifacts_round_trips() -> None:
    big = Manifest.create("app", "1.0", [artifact(f"r/{i:06d}.bin") for i in range(10_000)], created=CREATED)
    assert decode(encode(big)) == big


HEX = "0123456789abcdef"
SEGMENT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\"), min_size=1)
ARTIFACTS = st.dictionaries(
    st.lists(SEGMENT.filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255), min_size=1, max_size=3).map(
        lambda parts: "edge-repo/" + "/".join(parts)
    ),
    st.tuples(
        st.integers(0, 2**63 - 1),
        st.text(HEX, min_size=64, max_size=64),
        st.text(HEX, min_size=40, max_size=40),
        st.text(HEX, min_size=32, max_size=32),
        st.dictionaries(
            SEGMENT.filter(lambda s: len(s.encode()) <= 255), st.lists(st.text(max_size=20), max_size=3), max_size=3
        ),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.from_regex(BUNDLE_NAME_RE, fullmatch=True),
    version=st.from_regex(BUNDLE_VERSION_RE, fullmatch=True),
    created_by=st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=30),
    description=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60),
    files=ARTIFACTS,
)
def test_any_manifest_reads_back_from_its_canonical_bytes_and_writes_the_same_bytes(
    name: str, version: str, created_by: str, description: str, files: dict[str, Any]
) -> None:
    paths = [t for t in files if not any(t.startswith(other + "/") for other in files)]  # no file inside a file
    artifacts = [
        ManifestArtifact(target=t, source=t, size=size, sha256=sha256, sha1=sha1, md5=md5, properties=props)
        for t, (size, sha256, sha1, md5, props) in files.items()
        if t in paths
    ]
    original = Manifest.create(
        name, version, artifacts, created=CREATED, created_by=created_by, description=description
    )
    data = encode(original)
    assert decode(data) == original
    assert encode(decode(data)) == data
