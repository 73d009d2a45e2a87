"""The digest of what a bundle publishes (wire/published.py): one encoding, computed alike everywhere."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.published import PublishedDigest, published_digest, published_list

A = "a" * 64
B = "b" * 64


def test_the_list_is_sorted_compact_json_of_target_sha256_and_size() -> None:
    entries = [("releases-local/app/b.txt", B, 2), ("releases-local/app/a.txt", A, 10)]
    expected = f'[["releases-local/app/a.txt","{A}",10],["releases-local/app/b.txt","{B}",2]]'.encode()
    assert published_list(entries) == expected
    assert published_digest(entries) == hashlib.sha256(expected).hexdigest()


def test_nothing_published_is_the_empty_list() -> None:
    assert published_list([]) == b"[]"


def test_names_beyond_ascii_are_encoded_as_themselves_in_utf8_and_sorted_by_code_point() -> None:
    entries = [("r/é.txt", A, 1), ("r/z.txt", B, 1), ("r/\U0001f600", A, 1)]
    assert published_list(entries) == f'[["r/z.txt","{B}",1],["r/é.txt","{A}",1],["r/😀","{A}",1]]'.encode()


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("r/a", A, 1), ("r/a", A, 1)], "listed twice"),
        ([("", A, 1)], "non-empty string"),
        ([("r/a", A.upper(), 1)], "lowercase hex"),
        ([("r/a", A[:-1], 1)], "lowercase hex"),
        ([("r/a", A, -1)], "non-negative integer"),
        ([("r/a", A, True)], "non-negative integer"),
        ([("r/a", A, 1.0)], "non-negative integer"),
    ],
)
def test_an_entry_that_is_not_canonical_is_refused(entries: list[tuple[str, str, int]], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        published_list(entries)


def test_one_byte_of_difference_anywhere_changes_the_digest() -> None:
    base = [("r/a", A, 1), ("r/b", B, 2)]
    variants = [[("r/a", A, 1), ("r/c", B, 2)], [("r/a", A, 1), ("r/b", A, 2)], [("r/a", A, 1), ("r/b", B, 3)]]
    variants.append(base[:1])
    assert len({published_digest(base), *(published_digest(v) for v in variants)}) == 1 + len(variants)


entries_strategy = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.tuples(st.text("0123456789abcdef", min_size=64, max_size=64), st.integers(min_value=0, max_value=2**53)),
    max_size=30,
)


@given(entries_strategy, st.randoms())
def test_the_digest_does_not_depend_on_the_order_entries_come_in(
    files: dict[str, tuple[str, int]], rnd: object
) -> None:
    entries = [(target, sha, size) for target, (sha, size) in files.items()]
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert published_digest(entries) == published_digest(shuffled)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1), st.tuples(st.text("0123456789abcdef", min_size=64, max_size=64), st.integers(0))
    ),
    st.integers(1, 5),
)
def test_the_digest_made_a_page_at_a_time_from_sorted_entries_is_the_same(
    files: dict[str, tuple[str, int]], page: int
) -> None:
    entries = sorted((target, sha256, size) for target, (sha256, size) in files.items())
    digest = PublishedDigest()
    for start in range(0, len(entries), page):
        digest.add(entries[start : start + page])
    assert digest.hexdigest() == published_digest(entries)
    assert (digest.files, digest.bytes) == (len(entries), sum(size for *_, size in entries))


def test_entries_out_of_order_are_refused_when_made_a_page_at_a_time() -> None:
    digest = PublishedDigest()
    digest.add([("r/b", "a" * 64, 1)])
    with pytest.raises(ValueError, match="comes after"):
        digest.add([("r/a", "a" * 64, 1)])
