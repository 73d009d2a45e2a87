"""The blob store contract: one suite, run unchanged against every backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from storage_backends import (
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    InvalidOffset,
    StorageBackend,
)

MiB = 1024 * 1024


async def put(backend: StorageBackend, data: bytes, chunk: int = 64 * 1024) -> str:
    async with await backend.writer() as w:
        for i in range(0, len(data), chunk):
            await w.write(data[i : i + chunk])
        return (await w.commit()).sha256


async def read_all(backend: StorageBackend, sha: str, offset: int = 0, length: int | None = None) -> bytes:
    out = bytearray()
    async for chunk in await backend.read(sha, offset, length):
        out += chunk
    return bytes(out)


async def listed(backend: StorageBackend) -> set[str]:
    return {sha async for sha in backend.list()}


async def test_a_committed_blob_reads_back_with_all_three_digests(backend: StorageBackend) -> None:
    data = os.urandom(300_000)
    async with await backend.writer() as w:
        await w.write(data[:1000])
        await w.write(data[1000:])
        assert w.size == len(data)
        d = await w.commit()
    assert d.size == len(data)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.sha1 == hashlib.sha1(data).hexdigest()
    assert d.md5 == hashlib.md5(data).hexdigest()
    assert await read_all(backend, d.sha256) == data
    info = await backend.stat(d.sha256)
    assert (info.sha256, info.size) == (d.sha256, len(data))
    assert await backend.exists(d.sha256)
    assert await listed(backend) == {d.sha256}


async def test_a_sha256_only_writer_skips_the_other_digests(backend: StorageBackend) -> None:
    async with await backend.writer(all_digests=False) as w:
        await w.write(b"bundle blob")
        d = await w.commit(expected={"sha256": hashlib.sha256(b"bundle blob").hexdigest()})
    assert (d.sha1, d.md5) == (None, None)
    assert await read_all(backend, d.sha256) == b"bundle blob"


async def test_an_empty_blob_is_a_valid_blob(backend: StorageBackend) -> None:
    sha = await put(backend, b"")
    assert sha == hashlib.sha256(b"").hexdigest()
    assert (await backend.stat(sha)).size == 0
    assert await read_all(backend, sha) == b""


@pytest.mark.parametrize("field", ["sha256", "sha1", "md5"])
async def test_a_digest_mismatch_publishes_nothing(backend: StorageBackend, field: str) -> None:
    data = b"the real bytes" * 1000
    wrong = {"sha256": "0" * 64, "sha1": "0" * 40, "md5": "0" * 32}[field]
    async with await backend.writer() as w:
        await w.write(data)
        with pytest.raises(DigestMismatch) as err:
            await w.commit(expected={field: wrong})
    assert err.value.field == field
    assert not await backend.exists(hashlib.sha256(data).hexdigest())
    assert await listed(backend) == set()


async def test_a_size_mismatch_publishes_nothing(backend: StorageBackend) -> None:
    async with await backend.writer() as w:
        await w.write(b"12345")
        with pytest.raises(DigestMismatch) as err:
            await w.commit(expected_size=6)
    assert (err.value.field, err.value.expected, err.value.actual) == ("size", 6, 5)
    assert await listed(backend) == set()


async def test_expected_digests_are_compared_without_regard_to_case(backend: StorageBackend) -> None:
    data = b"case"
    async with await backend.writer() as w:
        await w.write(data)
        d = await w.commit(expected={"sha1": hashlib.sha1(data).hexdigest().upper()})
    assert d.sha1 == hashlib.sha1(data).hexdigest()


async def test_cancel_and_abandoned_writers_leave_nothing(backend: StorageBackend) -> None:
    w = await backend.writer()
    await w.write(b"cancelled" * 100)
    await w.cancel()
    await w.cancel()  # idempotent
    with pytest.raises(RuntimeError):
        async with await backend.writer() as w2:
            await w2.write(b"abandoned when the client went away")
            raise RuntimeError("client disconnected")
    assert await listed(backend) == set()


async def test_the_same_bytes_twice_are_stored_once(backend: StorageBackend) -> None:
    first, second = await asyncio.gather(put(backend, b"dup" * 5000), put(backend, b"dup" * 5000))
    assert first == second
    assert await listed(backend) == {first}
    assert await read_all(backend, first) == b"dup" * 5000


async def test_a_large_blob_streams_in_and_out_intact(backend: StorageBackend) -> None:
    # Larger than one S3 part, so the multipart path is exercised too.
    block = os.urandom(MiB)
    data = block * 20 + b"tail"
    sha = await put(backend, data, chunk=256 * 1024)
    assert sha == hashlib.sha256(data).hexdigest()
    assert (await backend.stat(sha)).size == len(data)
    h = hashlib.sha256()
    async for chunk in await backend.read(sha):
        h.update(chunk)
    assert h.hexdigest() == sha


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, b"0123456789"),
        (0, 1, b"0"),
        (3, 4, b"3456"),
        (7, None, b"789"),
        (9, 100, b"9"),
        (10, None, b""),
        (4, 0, b""),
    ],
)
async def test_reads_start_at_any_offset(
    backend: StorageBackend, offset: int, length: int | None, expected: bytes
) -> None:
    sha = await put(backend, b"0123456789")
    assert await read_all(backend, sha, offset, length) == expected


@pytest.mark.parametrize(("offset", "length"), [(11, None), (-1, None), (0, -1)])
async def test_reads_outside_the_blob_fail_before_any_byte(
    backend: StorageBackend, offset: int, length: int | None
) -> None:
    sha = await put(backend, b"0123456789")
    with pytest.raises(InvalidOffset):
        await backend.read(sha, offset, length)


async def test_a_missing_blob_is_reported_as_missing(backend: StorageBackend) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound):
        await backend.stat(missing)
    with pytest.raises(BlobNotFound):
        await backend.read(missing)
    with pytest.raises(BlobNotFound):
        await backend.delete(missing)
    assert not await backend.exists(missing)


async def test_sizes_answers_the_size_of_every_blob_held_and_leaves_out_the_rest(backend: StorageBackend) -> None:
    held = {await put(backend, os.urandom(n)): n for n in (0, 1, 5000, 70_000)}
    absent = [hashlib.sha256(f"never stored {i}".encode()).hexdigest() for i in range(40)]
    asked = [*absent[:20], *held, *absent[20:]]  # more than are stat'ed at once, held ones among them
    assert await backend.sizes(asked) == held
    assert await backend.sizes([]) == {}


async def test_sizes_refuses_a_name_that_is_not_a_digest_before_looking(backend: StorageBackend) -> None:
    sha = await put(backend, b"held")
    with pytest.raises(InvalidDigest):
        await backend.sizes([sha, "../" + sha[3:]])


async def test_read_many_answers_whole_blobs_in_the_order_asked(backend: StorageBackend) -> None:
    blobs = [os.urandom(n) for n in (3000, 0, 1, 70_000)]
    shas = [await put(backend, data) for data in blobs]
    assert await backend.read_many([shas[3], shas[0], shas[1], shas[2], shas[0]]) == [
        blobs[3], blobs[0], blobs[1], blobs[2], blobs[0]
    ]  # fmt: skip
    assert await backend.read_many([]) == []


async def test_read_many_names_the_blob_that_is_absent(backend: StorageBackend) -> None:
    held = await put(backend, b"held")
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound) as caught:
        await backend.read_many([held, missing])
    assert caught.value.sha256 == missing
    with pytest.raises(InvalidDigest):
        await backend.read_many([held, "../etc/passwd"])


async def test_delete_removes_a_blob(backend: StorageBackend) -> None:
    keep = await put(backend, b"keep")
    gone = await put(backend, b"gone")
    await backend.delete(gone)
    assert not await backend.exists(gone)
    assert await listed(backend) == {keep}


@pytest.mark.parametrize("count", [0, 1, 3])
async def test_delete_many_removes_those_held_and_skips_those_that_are_not(backend: StorageBackend, count: int) -> None:
    keep = await put(backend, b"keep")
    gone = [await put(backend, f"gone {i}".encode()) for i in range(count)]
    never = hashlib.sha256(b"never stored").hexdigest()
    await backend.delete_many([*gone, never])
    assert await listed(backend) == {keep}


async def test_delete_many_refuses_a_name_that_is_not_a_digest_before_deleting_any(backend: StorageBackend) -> None:
    held = await put(backend, b"held")
    with pytest.raises(InvalidDigest):
        await backend.delete_many([held, "../etc/passwd"])
    assert await listed(backend) == {held}


@pytest.mark.parametrize("name", ["../../etc/passwd", "A" * 64, "abc", "g" * 64, "0" * 63 + "/", "0" * 64 + "\x00", ""])
async def test_names_that_are_not_digests_are_refused(backend: StorageBackend, name: str) -> None:
    for call in (backend.stat(name), backend.read(name), backend.delete(name)):
        with pytest.raises(InvalidDigest):
            await call


async def test_direct_access_is_a_real_path_or_url_to_the_same_bytes(backend: StorageBackend) -> None:
    data = os.urandom(5000)
    sha = await put(backend, data)
    path = await backend.local_path(sha)
    url = await backend.presigned_url(sha, expires_in=60, filename="a b.bin", content_type="application/x-test")
    assert (path is None) != (url is None), "a backend offers sendfile or a redirect, not both or neither"
    if path is not None:
        assert Path(path).read_bytes() == data
    else:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == data
            assert resp.headers["Content-Type"] == "application/x-test"
            assert "a b.bin" in resp.headers["Content-Disposition"]


async def test_adopting_a_verified_file_publishes_it_or_leaves_it_for_streaming(
    backend: StorageBackend, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    staged = tmp_path / "staged.part"
    staged.write_bytes(data)
    if await backend.adopt(staged, sha, len(data)):
        assert not staged.exists(), "an adopted file leaves its old place"
        assert await read_all(backend, sha) == data
        assert (await backend.stat(sha)).size == len(data)
    else:  # the backend cannot take files: nothing published, the file untouched for the caller to stream
        assert staged.read_bytes() == data
        assert not await backend.exists(sha)


async def test_adopting_bytes_already_stored_keeps_them_and_removes_the_file(
    backend: StorageBackend, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    sha = await put(backend, data)
    staged = tmp_path / "again.part"
    staged.write_bytes(data)
    adopted = await backend.adopt(staged, sha, len(data))
    assert staged.exists() is not adopted
    assert await read_all(backend, sha) == data
    assert await listed(backend) == {sha}


async def test_adopting_a_file_of_the_wrong_size_publishes_nothing(backend: StorageBackend, tmp_path: Path) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    staged = tmp_path / "short.part"
    staged.write_bytes(data[:-1])
    try:
        adopted = await backend.adopt(staged, sha, len(data))
    except DigestMismatch:  # refused, or (below) left for the caller to stream, which will refuse it
        adopted = False
    assert not adopted
    assert not await backend.exists(sha)
    assert staged.read_bytes() == data[:-1]


async def test_a_quarantined_blob_leaves_the_store_and_its_right_bytes_can_return(backend: StorageBackend) -> None:
    data = os.urandom(300_000)
    sha = await put(backend, data)
    keep = await put(backend, b"another blob")
    first = await backend.quarantine(sha)
    assert not await backend.exists(sha)
    assert await listed(backend) == {keep}
    assert await backend.sizes([sha, keep]) == {keep: len(b"another blob")}
    for call in (backend.stat(sha), backend.read(sha)):
        with pytest.raises(BlobNotFound):
            await call
    if Path(first).is_absolute():  # local disk: the bytes are kept apart, whole, for an operator
        assert Path(first).read_bytes() == data
    else:
        assert first.startswith("s3://") and f"quarantine/{sha}" in first
    assert await put(backend, data) == sha, "the right bytes written again are published anew"
    assert await read_all(backend, sha) == data
    second = await backend.quarantine(sha)
    assert second != first, "each quarantined copy is kept"
    with pytest.raises(BlobNotFound):
        await backend.quarantine(sha)
    with pytest.raises(InvalidDigest):
        await backend.quarantine("../" + sha[3:])


async def test_write_many_stores_the_blobs_before_a_wrong_one_and_none_after_it(backend: StorageBackend) -> None:
    before, wrong, after = os.urandom(3000), os.urandom(2000), os.urandom(1000)
    batch = [
        (hashlib.sha256(before).hexdigest(), [before[:7], before[7:]]),
        (hashlib.sha256(b"what the manifest says").hexdigest(), [wrong]),
        (hashlib.sha256(after).hexdigest(), [after]),
    ]
    with pytest.raises(DigestMismatch) as refused:
        await backend.write_many(batch)
    assert (refused.value.field, refused.value.expected) == ("sha256", batch[1][0])
    assert await read_all(backend, batch[0][0]) == before
    assert await listed(backend) == {batch[0][0]}
    await backend.write_many([])
    await backend.write_many(batch[2:])
    assert await listed(backend) == {batch[0][0], batch[2][0]}
