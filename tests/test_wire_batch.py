"""The blob-batch body (wire/batch.py): what the encoder writes, the decoder reads, at every limit.

A batch carries 1 to ``BATCH_MAX_BLOBS`` blobs of at most ``BATCH_BLOB_MAX`` bytes each.
The service writes it and the edge reads it with these same functions, so a batch the
service may send is one the edge accepts: a bundle of many tiny files once failed on
every edge because the two disagreed on how long the head line of 1,000 sha256s is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.batch import (
    BATCH_BLOB_MAX,
    BATCH_HEAD_MAX,
    BATCH_MAX_BLOBS,
    BatchReader,
    BatchRefused,
    body_length,
    encode,
    head_line,
)


def name(index: int) -> str:
    """A distinct sha256 for the ``index``-th blob: the decoder reads names, the blob store checks bytes."""
    return hashlib.sha256(index.to_bytes(8, "big")).hexdigest()


def blobs_of(*sizes: int) -> list[tuple[str, bytes]]:
    return [(name(i), bytes([i % 251]) * size) for i, size in enumerate(sizes)]


def decode(body: bytes, sizes: dict[str, int], chunk: int = 65536) -> list[tuple[str, bytes]]:
    """Read ``body`` as an edge does, in chunks of ``chunk`` bytes; the blobs, or BatchRefused."""
    chunks = iter([body[i : i + chunk] for i in range(0, len(body), chunk)])

    async def read() -> bytes | None:
        return next(chunks, None)

    async def run() -> list[tuple[str, bytes]]:
        reader = BatchReader(read)
        shas = await reader.head()
        blobs = []
        for sha in shas:
            pieces = await reader.take(sizes[sha])
            assert pieces is not None, f"the body ended inside blob {sha}"
            blobs.append((sha, b"".join(pieces)))
        assert await reader.at_end(), "bytes after the last listed blob"
        assert reader.consumed == len(body)
        return blobs

    return asyncio.run(run())


def round_trip(blobs: Sequence[tuple[str, bytes]], chunk: int = 65536) -> list[tuple[str, bytes]]:
    body = encode(blobs)
    sizes = {sha: len(data) for sha, data in blobs}
    assert len(body) == body_length([sha for sha, _ in blobs], sizes)
    return decode(body, sizes, chunk)


@pytest.mark.parametrize("count", [1, 2, BATCH_MAX_BLOBS - 1, BATCH_MAX_BLOBS])
def test_a_batch_of_up_to_the_most_blobs_of_one_byte_reads_back_as_written(count: int) -> None:
    blobs = blobs_of(*[1] * count)
    assert round_trip(blobs) == blobs


def test_the_head_line_of_the_most_blobs_is_exactly_as_long_as_the_decoder_allows() -> None:
    line = head_line([name(i) for i in range(BATCH_MAX_BLOBS)])
    assert len(line) == BATCH_HEAD_MAX == BATCH_MAX_BLOBS * 67 + 2
    assert line.endswith(b"\n") and b" " not in line


@pytest.mark.parametrize("size", [0, 1, BATCH_BLOB_MAX - 1, BATCH_BLOB_MAX])
def test_a_blob_of_up_to_the_byte_limit_reads_back_as_written(size: int) -> None:
    blobs = blobs_of(size, 3)
    assert round_trip(blobs) == blobs


def test_the_most_blobs_with_one_at_the_byte_limit_read_back_as_written() -> None:
    blobs = blobs_of(BATCH_BLOB_MAX, *[1] * (BATCH_MAX_BLOBS - 1))
    assert round_trip(blobs, chunk=1 << 20) == blobs


def test_no_blobs_or_one_more_than_the_most_are_refused_by_the_encoder() -> None:
    with pytest.raises(BatchRefused, match=f"1 to {BATCH_MAX_BLOBS} distinct"):
        encode([])
    with pytest.raises(BatchRefused, match=f"1 to {BATCH_MAX_BLOBS} distinct"):
        encode(blobs_of(*[1] * (BATCH_MAX_BLOBS + 1)))


def test_one_more_blob_than_the_most_is_refused_by_the_decoder_with_a_clear_error() -> None:
    shas = [name(i) for i in range(BATCH_MAX_BLOBS + 1)]
    body = json.dumps(shas, separators=(",", ":")).encode() + b"\n" + b"x" * len(shas)
    with pytest.raises(BatchRefused) as caught:
        decode(body, dict.fromkeys(shas, 1))
    assert caught.value.status == 400
    assert caught.value.message.startswith(f"A blob batch carries at most {BATCH_MAX_BLOBS} blobs")


def test_an_empty_list_is_refused_by_the_decoder() -> None:
    with pytest.raises(BatchRefused, match=f"1 to {BATCH_MAX_BLOBS} distinct"):
        decode(b"[]\n", {})


def test_a_blob_one_byte_over_the_limit_is_refused_by_encoder_and_decoder() -> None:
    blobs = blobs_of(BATCH_BLOB_MAX + 1)
    with pytest.raises(BatchRefused, match=f"over {BATCH_BLOB_MAX} bytes go alone"):
        encode(blobs)
    body = head_line([blobs[0][0]]) + blobs[0][1]
    with pytest.raises(BatchRefused, match=f"over {BATCH_BLOB_MAX} bytes"):
        decode(body, {blobs[0][0]: BATCH_BLOB_MAX + 1})


def test_the_decoder_reads_a_head_line_with_spaces_as_long_as_it_fits() -> None:
    """Any JSON array of sha256s is read; only its length is bounded by what the encoder writes."""
    blobs = blobs_of(1, 2, 3)
    body = json.dumps([sha for sha, _ in blobs]).encode() + b"\n" + b"".join(d for _, d in blobs)
    assert decode(body, {sha: len(d) for sha, d in blobs}) == blobs


def test_a_head_line_that_never_ends_is_cut_off_at_the_limit() -> None:
    """The decoder stops reading at the longest head line allowed, whatever follows."""
    read = 0

    async def endless() -> bytes:
        nonlocal read
        read += 4096
        return b"[" + b" " * 4095

    with pytest.raises(BatchRefused, match="at most"):
        asyncio.run(BatchReader(endless).head())
    assert read < BATCH_HEAD_MAX + 2 * 4096


SIZES = st.lists(st.integers(0, 3000), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(sizes=SIZES, chunk=st.integers(1, 5000), data=st.data())
def test_any_batch_reads_back_as_written_however_its_bytes_are_split(
    sizes: list[int], chunk: int, data: st.DataObject
) -> None:
    blobs = [(name(i), data.draw(st.binary(min_size=size, max_size=size))) for i, size in enumerate(sizes)]
    assert round_trip(blobs, chunk) == blobs
