"""The Distribution service's stores (bundles, their manifests, distributions and jobs, the edge
registry) answer the same on both engines a service may keep its state in: sqlite and a real
PostgreSQL (``db_target``)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from distribution import bundle_store
from distribution.bundle_store import Bundle, BundleArtifact, BundleBlob, BundleStore, ServiceBlobs, TargetTaken
from distribution.edges import Edge, EdgeStore
from distribution.jobs import ABORTED, COMPLETED, DELETE, DISTRIBUTE, FAILED, IN_PROGRESS, IN_QUEUE, JobStore
from distribution.schema import distribution_migrations
from repository.db import Database
from repository.errors import Conflict, NotFound
from repository.schema import catalog_migrations
from tests.test_database import answered, writer_held

CHUNK = 16  # a manifest chunk in these tests, so that sizes around it stay small
MiB = 1024 * 1024
# What storing and reading a 30 MiB manifest may add to the peak: a few chunks of 1 MiB in
# flight; held whole it would add 30 MiB and more.
FLAT_LIMIT = 10 * MiB


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, distribution_migrations)
    yield db
    await db.close()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_store, "MANIFEST_CHUNK", CHUNK)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def art(target: str, blob: str = "", size: int = 1, source: str = "") -> BundleArtifact:
    digest = sha(blob or target)
    return BundleArtifact(target, source or f"src/{target}", digest, digest[:40], digest[:32], size, {"k": ["v"]})


def bundle(version: str = "1.0", created: int = 1, name: str = "app") -> Bundle:
    return Bundle(name, version, "OPEN", "d", {"syntax": "plain_text", "content": ""}, "req", created, "admin", 1, 0, 0)


def edge(name: str = "edge-1", url: str = "http://127.0.0.1:9") -> Edge:
    return Edge(name, url, "site", "city", "US", "token", f"jfrt@{name}", 1)


async def stored(store: BundleStore, b: Bundle, artifacts: list[BundleArtifact]) -> None:
    """``b`` with ``artifacts``, staged a page of two at a time as the service stages them."""
    for start in range(0, len(artifacts), 2):
        new, taken = await store.stage(f"t-{b.version}", artifacts[start : start + 2])
        assert taken is None and new == artifacts[start : start + 2]
    await store.commit_staged(b, f"t-{b.version}", replace=False)


async def listed(store: BundleStore, name: str, version: str) -> list[BundleArtifact]:
    return [a async for page in store.artifact_pages(name, version) for a in page]


async def test_a_bundle_is_stored_whole_read_in_pages_and_deleted_with_its_rows(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle_store, "ARTIFACT_PAGE", 2)
    store = BundleStore(database)
    artifacts = [art("r/a.bin", "x", 3), art("r/b.bin", "x", 3), art("r/c.bin", "y", 5), art("r/é.bin", "z", 7)]
    await stored(store, bundle(), artifacts)
    assert await store.get("app", "1.0") == bundle()
    assert await listed(store, "app", "1.0") == artifacts
    assert await store.blobs("app", "1.0") == sorted({sha("x"), sha("y"), sha("z")})
    blobs = await store.bundle_blobs("app", "1.0", [sha("x"), sha("z"), sha("absent")])
    assert blobs == {
        sha("x"): BundleBlob(sha("x"), 3, 2, 6, "r/a.bin"),
        sha("z"): BundleBlob(sha("z"), 7, 1, 7, "r/é.bin"),
    }
    assert all(type(v) is int for b in blobs.values() for v in (b.size, b.files, b.bytes))
    assert await store.pinned([sha("x"), sha("absent")]) == {sha("x")}
    assert [p async for p in store.staged_pages("t-1.0")] == []  # moved into the bundle, not copied
    assert await store.delete("app", "1.0") is True
    assert await store.get("app", "1.0") is None
    assert await listed(store, "app", "1.0") == []
    assert await store.pinned([sha("x")]) == set()
    assert await store.delete("app", "1.0") is False


async def test_staging_skips_a_target_again_from_its_source_and_refuses_it_from_another(database: Database) -> None:
    store = BundleStore(database)
    assert await store.stage("t", [art("r/a"), art("r/b")]) == ([art("r/a"), art("r/b")], None)
    assert await store.stage("t", [art("r/b"), art("r/c")]) == ([art("r/c")], None)
    other = art("r/c", source="elsewhere/c")
    assert await store.stage("t", [art("r/d"), other]) == ([], TargetTaken("r/c", "src/r/c", "elsewhere/c"))
    assert [a.target async for page in store.staged_pages("t") for a in page] == ["r/a", "r/b", "r/c"]
    assert [s async for page in store.staged_blobs("t") for s in page] == sorted(sha(t) for t in ("r/a", "r/b", "r/c"))
    await store.unstage("t")
    assert [p async for p in store.staged_pages("t")] == []


async def test_stale_staging_is_cleared_and_fresh_staging_kept(database: Database) -> None:
    store = BundleStore(database)
    await store.stage("old", [art("r/a")])
    await store.clear_staging(before=0)
    assert [a.target async for page in store.staged_pages("old") for a in page] == ["r/a"]
    await store.clear_staging(before=2**62)
    assert [p async for p in store.staged_pages("old")] == []


async def test_an_update_replaces_only_an_open_bundle(database: Database) -> None:
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/a"), art("r/b")])
    await store.stage("new", [art("r/c")])
    await store.commit_staged(bundle(), "new", replace=True)
    assert [a.target for a in await listed(store, "app", "1.0")] == ["r/c"]
    assert await sign(store, b"{}") is True
    await store.stage("again", [art("r/d")])
    with pytest.raises(sa.exc.IntegrityError):  # signed: not deleted, so the insert meets it
        await store.commit_staged(bundle(), "again", replace=True)
    assert [a.target for a in await listed(store, "app", "1.0")] == ["r/c"]


async def test_bundles_are_listed_a_page_at_a_time_newest_first(database: Database) -> None:
    store = BundleStore(database)
    for i in range(12):
        await stored(store, bundle(f"1.{i}", created=i), [])
    await stored(store, bundle("9", created=5, name="other"), [])
    first, total = await store.page(None, 0)
    assert total == 13
    assert [b.version for b in first] == ["1.11", "1.10", "1.9", "1.8", "1.7", "1.6", "1.5", "9", "1.4", "1.3"]
    rest, _ = await store.page(None, 10)
    assert [b.version for b in rest] == ["1.2", "1.1", "1.0"]
    mine, total = await store.page("other", 0)
    assert total == 1 and [b.name for b in mine] == ["other"]


async def sign(store: BundleStore, manifest: bytes | io.BytesIO, signature: str = "sig", version: str = "1.0") -> bool:
    stream = manifest if isinstance(manifest, io.BytesIO) else io.BytesIO(manifest)
    size = len(stream.getvalue()) - stream.tell()
    return await store.mark_signed(
        "app",
        version,
        manifest=stream,
        manifest_size=size,
        manifest_sha256=hashlib.sha256(stream.getvalue()[stream.tell() :]).hexdigest(),
        signature=signature,
        signed_by="F" * 40,
        at=5,
    )


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


async def test_a_distribution_status_is_answered_while_the_writer_is_busy(database: Database) -> None:
    """A status read waits for no job's bulk work (loading a bundle's rows, say)."""
    jobs, bundles = JobStore(database), BundleStore(database)
    await stored(bundles, bundle(), [art("r/a.bin")])
    dist_id, _ = await jobs.create(DISTRIBUTE, "app", "1.0", (), [edge()], (0, 0))
    async with writer_held(database) as busy:
        assert await answered(lambda: bundles.get("app", "1.0")) == bundle()
        assert [a.target for a in await answered(lambda: listed(bundles, "app", "1.0"))] == ["r/a.bin"]
        found = await answered(lambda: jobs.get("app", "1.0", dist_id))
        assert found is not None and found.status == IN_QUEUE
        assert [d.id for d in await answered(lambda: jobs.history("app", "1.0"))] == [dist_id]
        assert not busy.done()


async def test_the_service_scrub_walks_the_blobs_of_bundles_in_sha256_order(database: Database) -> None:
    """(Those of source paths join them from the catalog, whose own tests cover its half.)"""
    store = BundleStore(database)
    await stored(store, bundle(), [art("r/x", "one", 9), art("r/y", "two", 4), art("r/z", "two", 4)])
    await stored(store, bundle("2.0"), [art("r/x", "one", 9)])
    blobs = ServiceBlobs(database)
    everything = sorted({(sha("one"), 9), (sha("two"), 4)})
    assert await blobs.blobs_after("", 10) == everything
    assert await blobs.blobs_after(everything[0][0], 10) == everything[1:]
    assert await blobs.blobs_after("", 1) == everything[:1]
    assert await blobs.blobs_after(everything[1][0], 10) == []


async def test_a_distribution_is_made_once_with_a_job_per_edge_and_counted_per_bundle(database: Database) -> None:
    jobs = JobStore(database)
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    edges = [edge("b-edge"), edge("a-edge")]
    first, new = await jobs.create(DISTRIBUTE, "app", "1.0", (), edges, (3, 30))
    assert new and type(first) is int
    assert await jobs.create(DISTRIBUTE, "app", "1.0", (), edges, (3, 30)) == (first, False)
    second, new = await jobs.create(DISTRIBUTE, "app", "1.0", (), edges[:1], (3, 30))
    assert new and second > first
    found = await jobs.get("app", "1.0", first)
    assert found is not None and found.friendly_id == 1 and found.status == IN_QUEUE
    assert [j.edge for j in found.jobs] == ["a-edge", "b-edge"]
    assert [(j.total_files, j.total_bytes, j.state) for j in found.jobs] == [(3, 30, IN_QUEUE)] * 2
    assert [(d.id, d.friendly_id) for d in await jobs.history("app", "1.0")] == [(second, 2), (first, 1)]
    assert await jobs.get("app", "1.0", second + 1) is None
    assert await jobs.count_by_state() == {IN_QUEUE: 3, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0}
    pending = await jobs.pending_by_edge()
    assert pending.keys() == {"a-edge", "b-edge"} and pending["b-edge"][0] == 2


async def test_jobs_run_update_and_finish_and_an_abort_wins_over_them(database: Database) -> None:
    jobs = JobStore(database)
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    dist_id, _ = await jobs.create(DISTRIBUTE, "app", "1.0", (), [edge("e1"), edge("e2")], (1, 1))
    runnable = await jobs.runnable(set(), 4)
    assert [j.key for j in runnable] == [(dist_id, "e1"), (dist_id, "e2")]
    assert [j.key for j in await jobs.runnable({"e1"}, 4)] == [(dist_id, "e2")]
    assert await jobs.update((dist_id, "e1"), state=IN_PROGRESS, transaction_id="tx", distributed_files=1) is True
    job = await jobs.job((dist_id, "e1"))
    assert job is not None and (job.state, job.transaction_id, job.distributed_files) == (IN_PROGRESS, "tx", 1)
    assert await jobs.update((dist_id, "e1"), next_attempt=2**62) is True
    assert [j.edge for j in await jobs.runnable(set(), 4)] == ["e2"]
    assert await jobs.finish((dist_id, "e1"), COMPLETED) is None  # e2 still runs
    assert await jobs.update((dist_id, "e1"), state=IN_PROGRESS) is False  # finished: stays so
    assert await jobs.holders("app", "1.0") == [("e1", "jfrt@e1")]
    assert [j.key for j in await jobs.abort("app", "1.0")] == [(dist_id, "e2")]
    found = await jobs.get("app", "1.0", dist_id)
    assert found is not None and found.finished is not None and found.status == FAILED
    assert [(j.state, j.general_error) for j in found.jobs] == [(COMPLETED, ""), (FAILED, ABORTED)]
    assert await jobs.finish((dist_id, "e2"), COMPLETED) is None  # aborted first: the abort stands
    assert await jobs.abort("app", "1.0") == []


async def test_the_last_finished_job_closes_its_distribution_and_a_removal_unholds(database: Database) -> None:
    jobs = JobStore(database)
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    dist_id, _ = await jobs.create(DISTRIBUTE, "app", "1.0", (), [edge("e1")], (1, 1))
    shared, _ = await jobs.create(DISTRIBUTE, "app", "1.0", (), [edge("e1"), edge("e2")], (1, 1))
    (first,) = (await jobs.get("app", "1.0", dist_id)).jobs  # type: ignore[union-attr]
    _, only_there = (await jobs.get("app", "1.0", shared)).jobs  # type: ignore[union-attr]
    assert await jobs.sharing_transaction(first) is True
    assert await jobs.sharing_transaction(only_there) is False
    assert await jobs.finish((shared, "e1"), COMPLETED) is None  # its e2 job still runs
    assert await jobs.sharing_transaction(first) is False
    done = await jobs.finish((dist_id, "e1"), COMPLETED)
    assert done is not None and done.id == dist_id and done.status == COMPLETED and done.finished is not None
    removal, _ = await jobs.create_delete("app", "1.0", (), [edge("e1")], "keep", (1, 1))
    await jobs.finish((removal, "e1"), COMPLETED)
    assert await jobs.holders("app", "1.0") == []
    assert [d.type for d in await jobs.history("app", "1.0")] == [DELETE, DISTRIBUTE, DISTRIBUTE]
    assert (await jobs.get("app", "1.0", shared)).status == IN_PROGRESS  # type: ignore[union-attr]


async def test_an_edge_is_registered_once_and_its_health_recorded(database: Database) -> None:
    edges = EdgeStore(database)
    assert await edges.add(edge("b")) == (edge("b"), True)
    assert await edges.add(edge("b")) == (edge("b"), False)
    with pytest.raises(Conflict, match="already registered"):
        await edges.add(edge("b", url="http://127.0.0.1:10"))
    await edges.add(edge("a"))
    assert [e.name for e in await edges.list()] == ["a", "b"]
    await edges.record_health("a", True)
    await edges.record_health("b", False, "refused")
    a, b = await edges.get("a"), await edges.get("b")
    assert a is not None and a.healthy is True and a.last_seen and a.last_error is None
    assert b is not None and b.healthy is False and b.last_seen is None and b.last_error == "refused"
    await edges.remove("a")
    assert await edges.get("a") is None
    with pytest.raises(NotFound):
        await edges.remove("a")


def peak_over_now() -> int:
    """Bytes this process's peak resident memory (VmHWM) rose over its resident memory when
    ``reset_peak`` ran."""
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
