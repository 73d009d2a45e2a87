"""The Distribution service's stores (bundles, distributions and jobs, the edge
registry) answer the same on both engines a service may keep its state in: sqlite and a real
PostgreSQL (``db_target``)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from distribution import bundle_store
from distribution.bundle_store import Bundle, BundleArtifact, BundleBlob, BundleStore, ServiceBlobs, TargetTaken
from distribution.edges import Edge, EdgeStore
from distribution.jobs import ABORTED, COMPLETED, DELETE, DISTRIBUTE, FAILED, IN_PROGRESS, IN_QUEUE, Job, JobStore
from distribution.schema import distribution_migrations
from repository.db import Database
from repository.errors import Conflict, NotFound
from repository.schema import catalog_migrations
from tests.test_database import answered, writer_held


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, distribution_migrations)
    yield db
    await db.close()


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


LEASE = 60_000


def keys_of(jobs: list[Job]) -> list[tuple[int, str]]:
    return [j.key for j in jobs]


async def test_jobs_run_update_and_finish_and_an_abort_wins_over_them(database: Database) -> None:
    jobs = JobStore(database, holder="replica-a")
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    dist_id, _ = await jobs.create(DISTRIBUTE, "app", "1.0", (), [edge("e1"), edge("e2")], (1, 1))
    e1, e2 = (dist_id, "e1"), (dist_id, "e2")
    assert keys_of(await jobs.claim({"e1"}, 4, LEASE)) == [e2]  # an edge busy here is skipped
    assert keys_of(await jobs.claim(set(), 4, LEASE)) == [e1]
    assert await jobs.claim(set(), 4, LEASE) == []  # leased: nobody takes them again
    assert await jobs.update(e1, state=IN_PROGRESS, transaction_id="tx", distributed_files=1) is True
    job = await jobs.job(e1)
    assert job is not None and (job.state, job.transaction_id, job.distributed_files) == (IN_PROGRESS, "tx", 1)
    assert await jobs.finish(e1, COMPLETED) is None  # e2 still runs
    assert await jobs.update(e1, state=IN_PROGRESS) is False  # finished: stays so
    assert await jobs.update(e2, next_attempt=2**62) is True
    await jobs.release(e2)
    assert await jobs.claim(set(), 4, LEASE) == []  # e2 waits for its next attempt
    assert await jobs.holders("app", "1.0") == [("e1", "jfrt@e1")]
    assert [j.key for j in await jobs.abort("app", "1.0")] == [e2]
    found = await jobs.get("app", "1.0", dist_id)
    assert found is not None and found.finished is not None and found.status == FAILED
    assert [(j.state, j.general_error) for j in found.jobs] == [(COMPLETED, ""), (FAILED, ABORTED)]
    assert await jobs.finish(e2, COMPLETED) is None  # aborted first: the abort stands
    assert await jobs.abort("app", "1.0") == []


async def test_replicas_share_the_queue_one_job_per_edge_and_only_the_lease_holder_writes(
    database: Database,
) -> None:
    a, b = JobStore(database, holder="replica-a"), JobStore(database, holder="replica-b")
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    first, _ = await a.create(DISTRIBUTE, "app", "1.0", (), [edge("e1")], (1, 1))
    second, _ = await a.create(DISTRIBUTE, "app", "1.0", (), [edge("e1"), edge("e2")], (1, 1))
    assert keys_of(await a.claim(set(), 1, LEASE)) == [(first, "e1")]
    assert keys_of(await b.claim(set(), 4, LEASE)) == [(second, "e2")]  # e1 runs on a: not a second job there
    assert await b.update((first, "e1"), state=IN_PROGRESS) is False
    assert await b.finish((first, "e1"), FAILED, "not mine") is None
    assert await a.renew([(first, "e1"), (second, "e2")], LEASE) == {(first, "e1")}
    assert await a.finish((first, "e1"), COMPLETED) is not None  # its distribution is done
    assert keys_of(await b.claim(set(), 4, LEASE)) == [(second, "e1")]  # e1 is free again
    assert await b.release_all() == 2
    assert keys_of(await a.claim(set(), 4, LEASE)) == [(second, "e1"), (second, "e2")]


async def test_a_lease_not_renewed_in_time_goes_to_another_replica_and_the_first_can_no_longer_write(
    database: Database,
) -> None:
    a, b = JobStore(database, holder="replica-a"), JobStore(database, holder="replica-b")
    await BundleStore(database).commit_staged(bundle(), "t", replace=False)
    dist_id, _ = await a.create(DISTRIBUTE, "app", "1.0", (), [edge("e1")], (1, 1))
    assert keys_of(await a.claim(set(), 4, lease_ms=1)) == [(dist_id, "e1")]
    for _ in range(1000):  # a hang guard: the lease ends a millisecond later
        if taken := await b.claim(set(), 4, LEASE):
            break
    assert keys_of(taken) == [(dist_id, "e1")]
    assert await a.renew([(dist_id, "e1")], LEASE) == set()
    assert await a.update((dist_id, "e1"), distributed_files=1) is False
    assert await b.update((dist_id, "e1"), distributed_files=1) is True


async def test_replicas_claiming_at_once_take_each_job_once_and_never_two_on_one_edge(
    db_target: str, tmp_path: Path
) -> None:
    replicas = [Database(db_target, local_dir=tmp_path / f"r{n}") for n in range(3)]
    for db in replicas:
        await db.open(catalog_migrations, distribution_migrations)
    try:
        await BundleStore(replicas[0]).commit_staged(bundle(), "t", replace=False)
        edges = [edge(f"e{n}") for n in range(6)]
        for _ in range(3):
            await JobStore(replicas[0]).create(DISTRIBUTE, "app", "1.0", (), edges, (1, 1))
        stores = [JobStore(db, holder=f"replica-{n}") for n, db in enumerate(replicas)]
        claimed = await asyncio.gather(*(store.claim(set(), 2, LEASE) for store in stores * 2))
        taken = [job.key for batch in claimed for job in batch]
        assert len(taken) == len(set(taken)) == 6  # every edge has one job running, taken once
        assert sorted(edge for _, edge in taken) == [e.name for e in edges]
    finally:
        for db in replicas:
            await db.close()


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
