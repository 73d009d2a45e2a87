"""The local blob store's directory layout, and stores written with the earlier one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage_backends import BlobsNotDeleted
from storage_backends.local import LocalBackend


def old_layout_blob(root: Path, data: bytes) -> str:
    """A blob where the two-level layout (``blobs/ab/cd/abcd...``) put it."""
    sha = hashlib.sha256(data).hexdigest()
    folder = root / "blobs" / sha[:2] / sha[2:4]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sha).write_bytes(data)
    return sha


async def read_all(backend: LocalBackend, sha: str) -> bytes:
    return b"".join([chunk async for chunk in await backend.read(sha)])


async def test_a_new_blob_sits_one_directory_below_the_blob_folder(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    await backend.open()
    async with await backend.writer() as writer:
        await writer.write(b"one level")
        sha = (await writer.commit()).sha256
    path = await backend.local_path(sha)
    assert path is not None
    assert path.relative_to(tmp_path / "blobs").parts == (sha[:2], sha)
    assert path.read_bytes() == b"one level"


async def test_a_store_of_the_two_level_layout_is_moved_when_opened(tmp_path: Path) -> None:
    blobs = {old_layout_blob(tmp_path, os.urandom(1000 + i)): i for i in range(40)}
    # a crash part way through an earlier move: one blob already in its new place, its old folder left
    moved = next(iter(blobs))
    (tmp_path / "blobs" / moved[:2] / moved[2:4] / moved).rename(tmp_path / "blobs" / moved[:2] / moved)
    backend = LocalBackend(tmp_path)
    await backend.open()
    assert {sha async for sha in backend.list()} == set(blobs)
    for sha in blobs:
        data = await read_all(backend, sha)
        assert hashlib.sha256(data).hexdigest() == sha
        assert (await backend.stat(sha)).size == len(data)
    leftovers = [p for p in (tmp_path / "blobs").glob("*/*") if p.is_dir()]
    assert leftovers == [], "no folder of the old layout is left"
    await backend.open()  # a second open finds nothing to move and changes nothing
    assert {sha async for sha in backend.list()} == set(blobs)


async def test_delete_many_names_each_blob_it_could_not_unlink_and_deletes_the_others(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    await backend.open()
    stored = []
    for data in (b"first", b"second", b"third"):
        async with await backend.writer() as writer:
            await writer.write(data)
            stored.append((await writer.commit()).sha256)
    stuck = hashlib.sha256(b"a folder where a blob should be").hexdigest()
    blob_dir = tmp_path / "blobs" / stuck[:2]
    blob_dir.mkdir(parents=True, exist_ok=True)
    (blob_dir / stuck).mkdir()  # unlink fails on it, whoever runs the test
    with pytest.raises(BlobsNotDeleted) as raised:
        await backend.delete_many([stored[0], stuck, stored[1], "0" * 64])
    assert raised.value.sha256s == [stuck]
    assert sorted([sha async for sha in backend.list()]) == sorted([stored[2], stuck])
