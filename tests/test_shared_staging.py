"""Staging in a shared S3 bucket: a blob begun by one replica is finished by another.

Each "replica" here is what an edge process has of its own: a local staging folder, a
connection to the database and a client of the bucket; the database (sqlite, then PostgreSQL)
and the bucket (a real SeaweedFS) are shared, as replicas share them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.app import create_app
from edge.keys import transactions_key
from edge.receiving import ResumeMismatch
from edge.schema import edge_migrations
from edge.shared_staging import SharedStaging, staging_for
from edge.staging import Staging
from repository.catalog import now_ms
from repository.db import Database
from repository.schema import catalog_migrations
from storage_backends import DigestMismatch, StagedChunk, StorageError, create_backend
from storage_backends.s3_common import MIN_PART_SIZE
from storage_backends.s3_staging import Part, plan_parts
from tests.conftest import backend_params, make_settings, storage_settings
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import TX as TX_PATH
from tests.test_edge_transactions import _cut_off, manifest_of, received_bytes, signed, token, trust
from tests.test_edge_transactions import start as start_transaction

PART = MIN_PART_SIZE  # the smallest part S3 allows keeps the blobs of these tests small
TX = "a" * 64


@dataclass
class Replica:
    staging: SharedStaging
    database: Database
    storage: Any


@pytest.fixture
async def replicas(db_target: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[list[Replica]]:
    """Two replicas sharing one database and one bucket prefix."""
    params = {**backend_params("s3", tmp_path, request), "part_size": PART}
    made: list[Replica] = []
    try:
        for number in (1, 2):
            database = Database(db_target, local_dir=tmp_path / f"replica{number}")
            await database.open(catalog_migrations, edge_migrations)
            storage = create_backend("s3", params)
            await storage.open()
            local = Staging(tmp_path / f"replica{number}" / "staging")
            staging = staging_for(local, storage, database)
            assert isinstance(staging, SharedStaging)
            made.append(Replica(staging, database, storage))
        yield made
    finally:
        for replica in made:
            await replica.storage.close()
            await replica.database.close()


async def stage(replica: Replica, sha256: str, start: int, data: bytes) -> str:
    """Append ``data`` at ``start`` as one request does, in pieces, and end the request keeping
    what arrived; answers the sha256 of every byte staged."""
    staged = await replica.staging.open(TX, sha256, start)
    pieces = [data[i : i + 100_003] for i in range(0, len(data), 100_003)]
    await asyncio.to_thread(staged.append, pieces)
    await asyncio.to_thread(staged.close)
    return staged.sha256()


async def stored(replica: Replica, sha256: str) -> bytes:
    return b"".join([chunk async for chunk in await replica.storage.read(sha256)])


async def leftovers(replica: Replica) -> set[str]:
    return await replica.staging.area.groups() | await replica.staging.chunks.transactions()


def test_a_local_store_keeps_staging_on_the_local_disk(tmp_path: Path) -> None:
    local = Staging(tmp_path / "staging")
    storage = create_backend("local", {"root": str(tmp_path / "blobs")})
    assert staging_for(local, storage, Database(tmp_path / "node.db")) is local


@pytest.mark.parametrize("cut", [1, PART - 1, PART, PART + 1, 2 * PART + 7])
async def test_a_blob_begun_on_one_replica_is_finished_verified_and_published_by_another(
    replicas: list[Replica], cut: int
) -> None:
    first, second = replicas
    data = os.urandom(2 * PART + 100_000)
    sha256 = hashlib.sha256(data).hexdigest()
    await stage(first, sha256, 0, data[:cut])
    assert await second.staging.received(TX, sha256) == cut, "every replica answers the bytes received"
    assert await second.staging.received(TX, sha256) == await first.staging.received(TX, sha256)
    assert await stage(second, sha256, cut, data[cut:]) == sha256, "the hash covers the first replica's bytes too"
    await second.staging.move_into(second.storage, TX, sha256, len(data))
    assert await stored(first, sha256) == data
    assert await first.staging.received(TX, sha256) == 0
    assert await leftovers(first) == set(), "the staged chunks are gone once published"


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1])
async def test_a_blob_staged_in_one_request_is_published_whole(replicas: list[Replica], size: int) -> None:
    replica = replicas[0]
    data = os.urandom(size)
    sha256 = hashlib.sha256(data).hexdigest()
    assert await stage(replica, sha256, 0, data) == sha256
    assert await replica.staging.received(TX, sha256) == size
    await replica.staging.move_into(replica.storage, TX, sha256, size)
    assert await stored(replica, sha256) == data


async def test_a_small_blob_staged_in_two_requests_is_published_whole(replicas: list[Replica]) -> None:
    first, second = replicas
    data = os.urandom(1000)
    sha256 = hashlib.sha256(data).hexdigest()
    await stage(first, sha256, 0, data[:400])
    assert await stage(second, sha256, 400, data[400:]) == sha256
    await second.staging.move_into(second.storage, TX, sha256, len(data))
    assert await stored(first, sha256) == data


async def test_a_blob_resumed_many_times_in_small_pieces_is_published_whole(replicas: list[Replica]) -> None:
    data = os.urandom(2 * PART + 3)
    sha256 = hashlib.sha256(data).hexdigest()
    cuts = [0, 10, PART - 5, PART + 1_000_000, PART + 1_000_001, 2 * PART, len(data)]
    for number, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        got = await stage(replicas[number % 2], sha256, start, data[start:end])
    assert got == sha256
    await replicas[0].staging.move_into(replicas[0].storage, TX, sha256, len(data))
    assert await stored(replicas[1], sha256) == data


async def damage(replica: Replica, sha256: str) -> None:
    """Change the bytes of the blob's first staged chunk in the bucket behind the edge's back."""
    chunk = (await replica.staging.chunks.chunks(TX, sha256))[0]
    storage = replica.storage
    key = replica.staging.area.key(chunk.name)
    await asyncio.to_thread(storage.client.put_object, Bucket=storage.bucket, Key=key, Body=os.urandom(chunk.size))


async def test_a_staged_chunk_changed_in_the_bucket_fails_the_replica_that_takes_over(
    replicas: list[Replica],
) -> None:
    first, second = replicas
    data = os.urandom(PART + 10)
    sha256 = hashlib.sha256(data).hexdigest()
    await stage(first, sha256, 0, data[:PART])
    await damage(first, sha256)
    with pytest.raises(DigestMismatch):
        await second.staging.open(TX, sha256, PART)
    assert not await second.storage.exists(sha256)


async def test_a_staged_chunk_changed_after_it_was_hashed_is_never_published(replicas: list[Replica]) -> None:
    replica = replicas[0]
    data = os.urandom(2 * PART + 10)
    sha256 = hashlib.sha256(data).hexdigest()
    assert await stage(replica, sha256, 0, data) == sha256
    await damage(replica, sha256)
    with pytest.raises(DigestMismatch):
        await replica.staging.move_into(replica.storage, TX, sha256, len(data))
    assert not await replica.storage.exists(sha256)
    assert [sha async for sha in replica.storage.list()] == []


async def test_a_second_writer_at_the_same_offset_is_refused_and_the_first_ones_bytes_stand(
    replicas: list[Replica],
) -> None:
    first, second = replicas
    data = os.urandom(3 * PART)
    sha256 = hashlib.sha256(data).hexdigest()
    await stage(first, sha256, 0, data[:PART])
    late = await second.staging.open(TX, sha256, PART)  # a resume on B while A still appends
    await stage(first, sha256, PART, data[PART : 2 * PART])
    await asyncio.to_thread(late.append, [os.urandom(PART)])
    with pytest.raises(ResumeMismatch) as refused:
        await asyncio.to_thread(late.close)
    assert refused.value.headers["X-Received-Bytes"] == str(2 * PART)
    assert await first.staging.received(TX, sha256) == 2 * PART
    assert await stage(second, sha256, 2 * PART, data[2 * PART :]) == sha256
    await second.staging.move_into(second.storage, TX, sha256, len(data))
    assert await stored(first, sha256) == data


class WatchedArea:
    """The bucket's staging area, counting the chunks read back; the ``failing``-th chunk put
    (from 1) fails, if any."""

    def __init__(self, area: Any, failing: int = 0) -> None:
        self.area, self.failing, self.puts, self.reads = area, failing, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.area, name)

    async def read_into(self, chunk: StagedChunk, consume: Any) -> None:
        self.reads += 1
        await self.area.read_into(chunk, consume)

    async def put(self, name: str, body: bytes | bytearray) -> StagedChunk:
        self.puts += 1
        if self.puts == self.failing:
            raise StorageError("S3 put of staged chunk failed: 503 Slow Down")
        return await self.area.put(name, body)


async def test_a_resume_reads_the_staged_chunks_back_once_on_a_replica_that_takes_over_and_not_where_they_were_stored(
    replicas: list[Replica],
) -> None:
    first, second = replicas
    counted = [WatchedArea(r.staging.area) for r in replicas]
    first.staging.area, second.staging.area = counted  # type: ignore[assignment]
    data = os.urandom(3 * PART)
    sha256 = hashlib.sha256(data).hexdigest()
    await stage(first, sha256, 0, data[:PART])
    await stage(first, sha256, PART, data[PART : PART + 10])
    assert counted[0].reads == 0, "the replica that stored them still holds their hash"
    await stage(second, sha256, PART + 10, data[PART + 10 : 2 * PART])
    assert counted[1].reads == 2, "the replica that takes over hashes each chunk stored so far, once"
    assert await stage(first, sha256, 2 * PART, data[2 * PART :]) == sha256
    assert counted[0].reads == 3, "another replica appended since: the chunks are read back"
    await first.staging.move_into(first.storage, TX, sha256, len(data))
    assert await stored(second, sha256) == data


async def test_a_chunk_that_fails_to_store_ends_the_upload_and_the_chunks_after_it_are_not_counted(
    replicas: list[Replica],
) -> None:
    first, second = replicas
    data = os.urandom(6 * PART)
    sha256 = hashlib.sha256(data).hexdigest()
    first.staging.area = WatchedArea(first.staging.area, failing=2)  # type: ignore[assignment]
    with pytest.raises(StorageError):
        await stage(first, sha256, 0, data[: 5 * PART])
    assert await second.staging.received(TX, sha256) == PART, "the chunks stored after the failed one do not count"
    assert await stage(second, sha256, PART, data[PART:]) == sha256
    await second.staging.move_into(second.storage, TX, sha256, len(data))
    assert await stored(second, sha256) == data
    assert await leftovers(first) == set(), "the chunks stored but never counted are deleted with the blob's"


async def test_freeing_a_transaction_removes_its_chunks_and_a_sweep_keeps_only_open_ones(
    replicas: list[Replica],
) -> None:
    first, second = replicas
    other = "b" * 64
    for tx in (TX, other):
        staged = await first.staging.open(tx, "c" * 64, 0)
        await asyncio.to_thread(staged.append, [b"x" * 1000])
        await asyncio.to_thread(staged.close)
    await second.staging.free(TX)
    assert await leftovers(first) == {other}
    await second.staging.sweep(keep={TX})
    assert await leftovers(first) == set()
    assert await first.staging.received(other, "c" * 64) == 0


def chunks(*sizes: int) -> list[StagedChunk]:
    return [StagedChunk(f"c{i}", "e", size) for i, size in enumerate(sizes)]


def check_plan(plan: list[Part], given: list[StagedChunk], part: int, minimum: int) -> None:
    """Every byte once, in order; every part but the last at least ``minimum``; sent parts at most ``part``."""
    flat = [(p.chunk.name, p.start, p.length) for each in plan for p in each.pieces]
    position = {c.name: 0 for c in given}
    order = []
    for name, start, length in flat:
        assert start == position[name]
        position[name] += length
        order.append(name)
    assert position == {c.name: c.size for c in given}
    assert order == sorted(order, key=lambda name: int(name[1:]))
    for each in plan[:-1]:
        assert each.size >= minimum
    for each in plan:
        if each.copied:
            assert len(each.pieces) == 1
        else:
            assert each.size <= part


M, P = 5, 8  # minimum part and part size of the plans below
PLANS = {
    "nothing": ([], []),
    "one small chunk": ([1], [("copy", 1)]),
    "full parts": ([P, P, 3], [("copy", P), ("copy", P), ("copy", 3)]),
    "a chunk of the minimum": ([M, M - 1], [("copy", M), ("copy", M - 1)]),
    "a chunk one short of the minimum": ([M - 1, P], [("send", P), ("copy", M - 1)]),
    "small chunks gather": ([2, 2, 2, 2, 2], [("send", P), ("copy", 2)]),
    "small chunks gather to the end": ([2, 2, 2, 3, 2], [("send", P), ("send", 3)]),
    "a big rest after gathering": ([2, 20], [("send", P), ("copy", 14)]),
    "a small rest after gathering": ([2, P + 1, 1], [("send", P), ("send", 4)]),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_staged_chunks_are_copied_where_their_size_allows_and_gathered_where_not(name: str) -> None:
    sizes, expected = PLANS[name]
    given = chunks(*sizes)
    plan = plan_parts(given, P, M)
    assert [("copy" if p.copied else "send", p.size) for p in plan] == expected
    check_plan(plan, given, P, M)


async def test_an_expired_transactions_staged_chunks_are_swept_from_the_bucket(
    aiohttp_client: Any, tmp_path: Path, request: pytest.FixtureRequest, keys: KeySet, key_factory: KeyFactory
) -> None:
    settings = make_settings(tmp_path, transaction_ttl=1, storage=storage_settings("s3-stream", tmp_path, request))
    client = await aiohttp_client(create_app(settings))
    await trust(client, keys.alice)
    headers = await token(client, "distributor")
    big = os.urandom(3 * 1024 * 1024)
    body = signed(key_factory, keys.alice, manifest_of({"big.bin": big}))
    tid = (await start_transaction(client, body, headers))["transaction_id"]
    url = f"{TX_PATH}/{tid}/blobs/{hashlib.sha256(big).hexdigest()}"
    await _cut_off(client, url, big, 2 * 1024 * 1024, headers)
    assert await received_bytes(client, url, headers) == 2 * 1024 * 1024
    staging = client.server.app[transactions_key].staging
    assert await staging.area.groups() == {tid}
    assert await client.server.app[transactions_key].expire(now=now_ms() + 2000) == [tid]
    assert await staging.area.groups() == set()
    assert await staging.chunks.transactions() == set()
