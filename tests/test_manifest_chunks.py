"""A signed manifest is kept as rows of chunks, on both engines: it reads back whole a chunk at
a time, in flat memory, and a signing that lost a race to another replica's runs again whole."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import sqlalchemy as sa

from distribution import bundle_store
from distribution.bundle_store import BundleStore
from repository.db import Database
from repository.errors import NotFound
from tests.test_distribution_stores import art, bundle, sign, stored
from tests.test_distribution_stores import database as database  # noqa: F401  (the fixture)

CHUNK = 16  # a manifest chunk in these tests, so that sizes around it stay small
MiB = 1024 * 1024
# What storing and reading a 30 MiB manifest may add to the peak: a few chunks of 1 MiB in
# flight; held whole it would add 30 MiB and more.
FLAT_LIMIT = 10 * MiB


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_store, "MANIFEST_CHUNK", CHUNK)


async def read_back(store: BundleStore, version: str = "1.0") -> tuple[str, list[bytes]]:
    signed = await store.signed_manifest("app", version)
    assert signed is not None
    return signed.signature, [chunk async for chunk in store.manifest_chunks(signed)]


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + CHUNK // 2])
async def test_a_signed_manifest_reads_back_whole_a_chunk_at_a_time(database: Database, size: int) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a")])
    data = bytes(i % 251 for i in range(size))
    assert await sign(store, data) is True
    signature, chunks = await read_back(store)
    assert signature == "sig" and b"".join(chunks) == data
    assert all(1 <= len(c) <= CHUNK for c in chunks) and len(chunks) == -(-size // CHUNK)
    found = await store.get("app", "1.0")
    assert found is not None and found.state == "SIGNED" and found.manifest_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.usefixtures("small_chunks")
async def test_a_manifest_is_read_from_the_streams_position_and_a_short_stream_stores_nothing(
    database: Database,
) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a")])
    stream = io.BytesIO(b"header:" + b"m" * 40)
    stream.seek(len(b"header:"))
    short = io.BytesIO(b"m" * 20)
    with pytest.raises(ValueError, match="ended before its 40 bytes"):
        await store.mark_signed(
            "app", "1.0", manifest=short, manifest_size=40, manifest_sha256="", signature="s", signed_by="", at=1
        )
    assert await store.signed_manifest("app", "1.0") is None
    assert (await store.get("app", "1.0")).state == "OPEN"  # type: ignore[union-attr]
    assert await sign(store, stream) is True
    assert b"".join((await read_back(store))[1]) == b"m" * 40


async def test_a_bundle_is_signed_once_and_keeps_its_first_manifest(database: Database) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a")])
    assert await sign(store, b"first", "sig-1") is True
    assert await sign(store, b"second", "sig-2") is False
    assert await read_back(store) == ("sig-1", [b"first"])


class SerializationFailure(Exception):
    """What psycopg raises for a transaction that lost a race with another one."""

    sqlstate = "40001"


class LosesARace(io.BytesIO):
    """A manifest whose first read to its end is cut off as a transaction losing a race is."""

    lost = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not self.lost and self.tell() == len(self.getvalue()):
            self.lost = True
            raise sa.exc.OperationalError("COMMIT", {}, SerializationFailure("could not serialize access"))
        return chunk


@pytest.mark.usefixtures("small_chunks")
async def test_a_signing_run_again_after_losing_a_race_stores_the_manifest_from_its_first_byte(
    database: Database,
) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a")])
    data = bytes(range(50))
    stream = LosesARace(b"head" + data)
    stream.seek(4)
    assert await sign(store, stream) is True
    assert stream.lost
    assert b"".join((await read_back(store))[1]) == data


@pytest.mark.usefixtures("small_chunks")
async def test_a_manifest_whose_bundle_is_deleted_while_read_is_not_found(database: Database) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a")])
    await sign(store, b"x" * (3 * CHUNK))
    signed = await store.signed_manifest("app", "1.0")
    assert signed is not None
    chunks = store.manifest_chunks(signed)
    assert await anext(chunks) == b"x" * CHUNK
    await store.delete("app", "1.0")
    with pytest.raises(NotFound):
        await anext(chunks)
    assert await store.signed_manifest("app", "1.0") is None


def peak_over_now() -> int:
    """This process's peak resident memory (VmHWM), in bytes, since ``reset_peak`` ran."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) * 1024


def reset_peak() -> int:
    """Start the peak anew (``/proc/self/clear_refs``); answers the resident memory now."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_over_now()


async def signed_and_read_back(store: BundleStore, version: str, size: int, spool: Path) -> int:
    """Sign a manifest of ``size`` bytes from a file and read it back; answers how much the
    process's peak memory grew over what it held before."""
    await stored(store, bundle(version), [art("r/a")])
    digest = hashlib.sha256()
    with spool.open("w+b") as manifest:
        for i in range(size // MiB):
            block = hashlib.sha256(f"{version} {i}".encode()).digest() * (MiB // 32)
            digest.update(block)
            manifest.write(block)
        manifest.seek(0)
        del block
        before = reset_peak()
        assert await store.mark_signed(
            "app", version, manifest=manifest, manifest_size=size, manifest_sha256="", signature="s", signed_by="", at=1
        )
    signed = await store.signed_manifest("app", version)
    assert signed is not None and signed.size == size
    read = hashlib.sha256()
    async for chunk in store.manifest_chunks(signed):
        read.update(chunk)
    assert read.hexdigest() == digest.hexdigest()
    return peak_over_now() - before


async def test_a_30_mb_manifest_is_signed_and_read_back_in_flat_memory(database: Database, tmp_path: Path) -> None:
    """Stored and read a chunk at a time, a manifest is never held whole, on either engine: after
    a small one has warmed every cache and thread up, one of 30 MiB costs hardly more."""
    store = BundleStore(database)
    small = await signed_and_read_back(store, "1.0", 4 * MiB, tmp_path / "small.json")
    large = await signed_and_read_back(store, "2.0", 30 * MiB, tmp_path / "large.json")
    print(f"peak memory grew {small / MiB:.1f} MiB for a 4 MiB manifest, {large / MiB:.1f} MiB for 30 MiB")
    assert large < FLAT_LIMIT
