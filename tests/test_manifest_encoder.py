"""The streaming manifest encoder: exactly ``encode``'s bytes, and ``Manifest``'s refusals, a piece at a time."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import manifest as manifest_module
from wire.manifest import (
    Manifest,
    ManifestArtifact,
    ManifestEncoder,
    ManifestError,
    ManifestTooLarge,
    decode,
    encode,
    encode_stream,
)

CREATED = "2026-11-22T10:00:00.000Z"


def artifact(target: str, content: bytes = b"app", **overrides: Any) -> ManifestArtifact:
    fields: dict[str, Any] = {
        "target": target,
        "source": "releases-local/" + target.partition("/")[2],
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "sha1": hashlib.sha1(content).hexdigest(),
        "md5": hashlib.md5(content).hexdigest(),
        "properties": {},
    }
    return ManifestArtifact(**{**fields, **overrides})


def header(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "app",
        "version": "1.4.0+build.7",
        "created": CREATED,
        "created_by": "release-manager",
        "description": 'App ünïcødé "quoted" \\ <script>',
        "release_notes": {"syntax": "markdown", "content": "# Fixed\n\ttabs"},
        "artifacts": (),
    }
    return Manifest(**{**fields, **overrides})


def streamed(head: Manifest, artifacts: list[Any]) -> bytes:
    return b"".join(encode_stream(head, artifacts))


def whole(head: Manifest, artifacts: list[ManifestArtifact]) -> bytes:
    return encode(Manifest(**{**head.__dict__, "artifacts": tuple(artifacts)}))


@pytest.mark.parametrize("count", [0, 1, 2, 500])
def test_streamed_bytes_are_the_canonical_bytes(count: int) -> None:
    artifacts = [artifact(f"edge-repo/app/{i:04d}.bin", str(i).encode()) for i in range(count)]
    data = streamed(header(), artifacts)
    assert data == whole(header(), artifacts)
    assert decode(data).artifacts == tuple(artifacts)


def test_unicode_and_reserved_characters_stream_as_raw_utf8() -> None:
    artifacts = [
        artifact("edge-repo/a b/%20+&=?#.bin", properties={"ключ": ["значение", 'a"b', "a"], "k": ["z", "z"]}),
        artifact("edge-repo/é/😀.bin"),
        artifact("edge-repo/日本/ファイル.txt"),
    ]
    data = streamed(header(), artifacts)
    assert data == whole(header(), artifacts)
    assert "日本/ファイル.txt".encode() in data


def test_one_blob_at_many_paths_is_listed_at_each() -> None:
    artifacts = [artifact(f"edge-repo/copy/{i:02d}/same.bin") for i in range(50)]
    data = streamed(header(), artifacts)
    assert data == whole(header(), artifacts)
    assert len({a.sha256 for a in decode(data).artifacts}) == 1


def test_records_of_any_kind_are_checked_and_normalised_as_manifest_artifacts() -> None:
    class Row:  # a stored bundle's row, say: the fields, not a ManifestArtifact
        def __init__(self, a: ManifestArtifact, properties: dict[str, list[str]]) -> None:
            self.__dict__.update(a.__dict__, properties=properties)

    plain = artifact("edge-repo/a.bin", properties={"os": ["linux", "darwin", "linux"]})
    data = streamed(header(), [Row(plain, {"os": ["linux", "darwin", "linux"]})])
    assert data == whole(header(), [plain])
    bad = Row(artifact("edge-repo/b.bin"), {})
    bad.sha256 = "ABC"
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.sha256"):
        streamed(header(), [bad])


@pytest.mark.parametrize(
    ("targets", "problem"),
    [
        (["r/b.bin", "r/a.bin"], r"artifacts\[1\]\.target: not sorted by target"),
        (["r/a.bin", "r/a.bin"], r"artifacts\[1\]\.target: duplicate target"),
        (["r/a", "r/a/b.bin"], r"artifacts\[1\]\.target: 'r/a/b.bin' is inside file 'r/a'"),
        # siblings that sort between a file and what would be inside it do not hide it
        (["r/a", "r/a-x.bin", "r/a.b", "r/a/deep/c.bin"], r"artifacts\[3\]\.target: .* is inside file 'r/a'"),
        (["r/x", "r/x/y", "r/x/y/z"], r"artifacts\[1\]\.target: 'r/x/y' is inside file 'r/x'"),
    ],
)
def test_the_stream_refuses_what_a_manifest_refuses(targets: list[str], problem: str) -> None:
    artifacts = [artifact(t) for t in targets]
    with pytest.raises(ManifestError, match=problem):
        streamed(header(), artifacts)
    with pytest.raises(ManifestError, match=problem):
        whole(header(), artifacts)


def test_a_prefix_that_is_no_folder_is_no_collision() -> None:
    artifacts = [artifact(t) for t in ["r/a", "r/a-x/b.bin", "r/a.d/e", "r/ab/c", "r/b/a"]]
    assert streamed(header(), artifacts) == whole(header(), artifacts)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4])
def test_artifact_count_limit(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(manifest_module, "MAX_ARTIFACTS", 3)
    artifacts = [artifact(f"r/{i}.bin") for i in range(count)]
    if count <= 3:
        assert decode(streamed(header(), artifacts)).artifacts == tuple(artifacts)
    else:
        with pytest.raises(ManifestError, match="more than 3 artifacts"):
            streamed(header(), artifacts)


def test_byte_limit_is_the_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = [artifact(f"r/{i}.bin") for i in range(3)]
    size = len(whole(header(), artifacts))
    for limit in (size - 1, size, size + 1):
        monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", limit)
        if limit < size:
            with pytest.raises(ManifestTooLarge):
                streamed(header(), artifacts)
        else:
            assert decode(streamed(header(), artifacts)).artifacts == tuple(artifacts)


def test_the_encoder_counts_and_measures_what_it_wrote() -> None:
    encoder = ManifestEncoder(header())
    pieces = [encoder.start(), *(encoder.add(artifact(f"r/{i}.bin")) for i in range(3)), encoder.finish()]
    assert encoder.count == 3
    assert encoder.size == len(b"".join(pieces))


def test_a_header_with_artifacts_is_refused() -> None:
    with pytest.raises(ValueError):
        ManifestEncoder(Manifest(**{**header().__dict__, "artifacts": (artifact("r/a.bin"),)}))


SEGMENT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\"), min_size=1)
TARGETS = st.sets(
    st.lists(SEGMENT.filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255), min_size=1, max_size=3).map(
        lambda parts: "edge-repo/" + "/".join(parts)
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(targets=TARGETS, description=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40))
def test_any_sorted_artifacts_stream_to_encode_or_to_its_refusal(targets: set[str], description: str) -> None:
    artifacts = [artifact(t, t.encode()) for t in sorted(targets)]
    head = header(description=description)
    try:
        expected: bytes | str = whole(head, artifacts)
    except ManifestError as exc:
        expected = exc.message
    try:
        got: bytes | str = streamed(head, artifacts)
    except ManifestError as exc:
        got = exc.message
    assert got == expected
