"""Reading a manifest a page at a time: the same manifests as ``decode``, the same refusals."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_manifest import ARTIFACTS, CREATED, artifact, canonical, sample
from wire import manifest_reader
from wire.manifest import MAX_ARTIFACTS, Manifest, ManifestArtifact, ManifestError, ManifestTooLarge, encode
from wire.manifest_reader import ManifestReader


def read(data: bytes, *, page: int = 3, chunk: int = 64) -> tuple[list[list[ManifestArtifact]], Manifest]:
    """Every page and the manifest they make, read in small chunks so values straddle them."""
    reader = ManifestReader(io.BytesIO(data), page=page, chunk=chunk)
    pages = list(reader.pages())
    assert reader.summary is not None
    header = reader.summary.header
    whole = Manifest(**{**header.__dict__, "artifacts": tuple(a for p in pages for a in p)})
    assert reader.summary.files == len(whole.artifacts)
    assert reader.summary.bytes == whole.total_size
    return pages, whole


def refused(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(ManifestError) as caught:
        read(data, **kwargs)
    return caught.value.message


def many(count: int) -> Manifest:
    return Manifest.create("app", "1.0", [artifact(f"r/{i:06d}.bin") for i in range(count)], created=CREATED)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7])
def test_a_manifest_reads_back_in_pages_of_at_most_the_page_size(count: int) -> None:
    original = many(count)
    pages, whole = read(encode(original))
    assert whole == original
    assert [len(p) for p in pages] == [3] * (count // 3) + ([count % 3] if count % 3 else [])


def test_paths_with_unicode_and_reserved_characters_and_one_blob_at_many_paths_read_back() -> None:
    targets = ["r/a b/ü.bin", "r/a!x", "r/a#1", "r/a%20", "r/a-x/y", "r/a/b", "r/a?/c", "r/日本/語", "r/😀"]
    original = Manifest.create("app", "1.0", [artifact(t) for t in targets], created=CREATED)
    assert read(encode(original), chunk=1)[1] == original


@pytest.mark.parametrize("count", [MAX_ARTIFACTS - 1, MAX_ARTIFACTS])
def test_a_manifest_of_up_to_the_artifact_limit_reads_back(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(manifest_reader, "MAX_ARTIFACTS", 5)
    count -= MAX_ARTIFACTS - 5
    assert read(encode(many(count)))[1] == many(count)


def test_one_artifact_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_reader, "MAX_ARTIFACTS", 5)
    assert "more than 5 artifacts" in refused(encode(many(6)))


def test_bytes_over_the_manifest_limit_are_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(many(10))
    monkeypatch.setattr(manifest_reader, "MAX_MANIFEST_BYTES", len(data) - 1)
    with pytest.raises(ManifestTooLarge):
        read(data)
    monkeypatch.setattr(manifest_reader, "MAX_MANIFEST_BYTES", len(data))
    assert read(data)[1] == many(10)


def edited(change: Any) -> bytes:
    obj = json.loads(encode(sample("r/a.bin", "r/b.bin", "r/c.bin")))
    change(obj)
    return canonical(obj)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(encode(sample("r/a.bin")) + b" ", "canonical", id="trailing-space"),
        pytest.param(b" " + encode(sample("r/a.bin")), "canonical", id="leading-space"),
        pytest.param(encode(sample("r/a.bin")).replace(b'"md5"', b'"md5" '), "canonical", id="space-in-artifact"),
        pytest.param(edited(lambda o: o["artifacts"].reverse()), "not sorted by target", id="unsorted"),
        pytest.param(edited(lambda o: o["artifacts"].append(o["artifacts"][2])), "duplicate target", id="duplicate"),
        pytest.param(edited(lambda o: o["artifacts"][1].update(target="r/a.bin/x")), "inside file", id="file-folder"),
        pytest.param(edited(lambda o: o["artifacts"][0].update(size=1.5)), "floats", id="float"),
        pytest.param(edited(lambda o: o["artifacts"][0].pop("md5")), "missing field", id="missing-field"),
        pytest.param(edited(lambda o: o.pop("name")), "missing field", id="no-name"),
        pytest.param(encode(sample("r/a.bin"))[:-40], "", id="truncated-header"),
        pytest.param(encode(sample("r/a.bin", "r/b.bin"))[:120], "", id="truncated-artifact"),
        pytest.param(
            encode(sample("r/a.bin")).replace(b'"size":3', b'"size":3,"size":3'), "duplicate key", id="dup-key"
        ),
        pytest.param(encode(sample("r/a.bin")).replace(b"r/a.bin", b"r/\xff.bin", 1), "UTF-8", id="bad-utf8"),
        pytest.param(b"", "canonical", id="empty"),
        pytest.param(b"[]", "canonical", id="not-an-object"),
    ],
)
def test_what_decode_refuses_the_reader_refuses_too(data: bytes, problem: str) -> None:
    assert problem in refused(data)


def test_a_file_inside_a_file_is_found_past_paths_that_sort_between_them() -> None:
    obj = json.loads(encode(sample("r/a.bin", "r/a.bin!", "r/a.bin-x/y", "r/a.bin.z")))
    obj["artifacts"][3]["target"] = "r/a.bin/z"  # after every other, as '/' sorts after '!', '-' and '.'
    assert "inside file 'r/a.bin'" in refused(canonical(obj))


@settings(max_examples=100, deadline=None)
@given(files=ARTIFACTS, page=st.integers(1, 4), chunk=st.integers(1, 300))
def test_any_manifest_reads_back_as_decode_reads_it(files: dict[str, Any], page: int, chunk: int) -> None:
    paths = [t for t in files if not any(t.startswith(other + "/") for other in files)]
    artifacts = [
        ManifestArtifact(target=t, source=t, size=size, sha256=sha256, sha1=sha1, md5=md5, properties=props)
        for t, (size, sha256, sha1, md5, props) in files.items()
        if t in paths
    ]
    original = Manifest.create("app", "1.0", artifacts, created=CREATED)
    assert read(encode(original), page=page, chunk=chunk)[1] == original
