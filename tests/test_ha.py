"""HA, end to end with real processes: edge replicas on one PostgreSQL and one S3 bucket behind
nginx, Distribution service replicas sharing jobs by leases, and the faults they must survive:
a replica killed mid-upload or mid-download, a replica started again with nothing on its disk,
PostgreSQL restarted mid-distribution, the pushing service killed, and garbage collection run
by two replicas at once.

Every wait is a hang guard, never a speed check.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from http.client import HTTPException
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.postgres import PostgresServer
from devstack.replicas import EdgeReplicas
from devstack.services import DistributionProcess, EdgeProcess
from edge.schema import edge_migrations
from edge.store import EdgeStore
from repository.artifacts import ArtifactService
from repository.catalog import Catalog
from repository.db import Database
from repository.policy import ArtifactPolicy
from repository.quarantine import Quarantine
from repository.schema import catalog_migrations
from storage_backends import create_backend
from tests.edge_setup import distributor_token, http, trust
from tests.fault_servers import Faults, S3Fault, S3Faults, ThreadedServer, proxy_app, s3_proxy_app
from tests.ha_setup import (
    MiB,
    alive,
    busiest,
    connect,
    edge_replicas,
    get,
    opened,
    put,
    serves_all,
    service_s3_environment,
    statuses,
    wait_for,
)
from tests.test_distribute_e2e import EVERYWHERE, FAST_RETRIES, V1, Service, public_key, running_service
from wire.protocol import BUNDLES

SIGNED_URLS = "/artifactory/api/signed/url"

BIG = os.urandom(24 * MiB)
FILES = {"big.bin": BIG, "notes.md": b"# app 1.0.0\n", "run.sh": b"#!/bin/sh\nexec app\n"}
SLOW = 6 * MiB  # bytes per second of blob uploads through the fault proxy: an upload lasts seconds
FINAL = ("Completed", "Failed")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


@pytest.fixture
def slow_proxy() -> Iterator[tuple[Faults, list[ThreadedServer]]]:
    """Uploads slowed to ``SLOW``; the test starts the proxy once it knows its target."""
    faults, started = Faults(upload_rate=SLOW, only="/blobs"), []
    yield faults, started
    for proxy in started:
        proxy.stop()


def proxied(proxies: tuple[Faults, list[ThreadedServer]], target: str) -> str:
    faults, started = proxies
    started.append(ThreadedServer(proxy_app(target, faults)).start())
    return started[-1].url


def watch(
    service: Service, version: str, dist_id: int, edges: Callable[[], list[EdgeProcess]], faults: Faults
) -> tuple[dict[str, Any], list[tuple[list[list[int]], int]]]:
    """Poll every replica ``edges()`` names until the distribution ends: (its status, the samples
    taken, each with the blob bytes the proxy had forwarded right after it)."""
    samples: list[tuple[list[list[int]], int]] = []
    done: list[dict[str, Any]] = []

    def finished() -> bool:
        samples.append(([statuses(e, version, FILES) for e in edges()], faults.upload_bytes))
        done[:] = [service.status(version, dist_id)]
        return done[0]["status"] in FINAL

    wait_for("the distribution to end", finished)
    return done[0], samples


def never_part(samples: list[tuple[list[list[int]], int]], sent_in_all: int) -> None:
    """No sample saw part of the bundle (a file served beside one not found); a sample taken while
    blob bytes still went on to the edge afterwards (so before the commit) saw none of it. A
    replica that cannot reach its database answers 5xx for a file: that serves nothing."""
    for i, (seen, sent) in enumerate(samples):
        for replica, files in enumerate(seen):
            if {200, 404} <= set(files):
                # a replica's files are asked one after another: the commit may land between two
                # asks (not found, then served), and then the replica serves all of it at once
                later = (
                    samples[i + 1][0][replica] if i + 1 < len(samples) and replica < len(samples[i + 1][0]) else None
                )
                committed_meanwhile = files == sorted(files, reverse=True) and later in (None, [200] * len(files))
                assert committed_meanwhile, ("part of the bundle served", seen, later)
            if sent < sent_in_all:
                assert 200 not in files, ("served before the commit", seen, sent)


def distributing_slowly(service: Service, edge: EdgeReplicas, proxies: Any) -> int:
    """Distribute 1.0.0 to ``edge`` through the slowing proxy; answers once its big blob is on its way."""
    faults = proxies[0]
    connect(service, edge, proxied(proxies, edge.url))
    service.signed_bundle("1.0.0", FILES)
    dist_id = service.distribute("1.0.0")
    wait_for("the upload to be under way", lambda: faults.upload_bytes >= 4 * MiB)
    return dist_id


def completes_whole(service: Service, dist_id: int, edges: Callable[[], list[EdgeProcess]], faults: Faults) -> None:
    """The distribution completes; meanwhile no replica served part of it, nor any of it before
    the commit; then every replica ``edges()`` names serves all of it."""
    done, samples = watch(service, "1.0.0", dist_id, edges, faults)
    assert done["status"] == "Completed", done
    never_part(samples, faults.upload_bytes)
    for replica in edges():
        assert serves_all(replica, "1.0.0", FILES), replica.url


def test_a_distribution_completes_while_the_replica_receiving_the_upload_is_killed(
    service: Service, slow_proxy: Any, postgres_url: str, s3_server: dict[str, str], tmp_path: Path
) -> None:
    faults = slow_proxy[0]
    with edge_replicas(tmp_path / "edge", postgres_url, s3_server) as edge:
        dist_id = distributing_slowly(service, edge, slow_proxy)
        before = [statuses(e, "1.0.0", FILES) for e in edge.replicas]
        edge.kill(busiest(edge))
        assert faults.upload_bytes < len(BIG), "the kill landed after the upload"
        completes_whole(service, dist_id, lambda: alive(edge), faults)
        assert before == [[404] * len(FILES)] * 3, before


def test_downloads_through_nginx_go_on_while_a_replica_is_killed(
    postgres_url: str, s3_server: dict[str, str], tmp_path: Path
) -> None:
    data = BIG[: 12 * MiB]  # more than the socket buffers between a replica and the client hold
    with edge_replicas(tmp_path / "edge", postgres_url, s3_server) as edge:
        target = f"{edge.url}/artifactory/artifactory-edge-uploads/tools/tool.bin"
        assert put(target, edge.admin_token, data) == 201
        attempts: list[int] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def download_slowly() -> bool:
            """One download read slowly, so that a kill lands in the middle of one."""
            with opened(target) as resp:
                body = b""
                while chunk := resp.read(64 * 1024):
                    body += chunk
                    stop.wait(0.01)
                return hashlib.sha256(body).digest() == hashlib.sha256(data).digest()

        def loop() -> None:
            while not stop.is_set():
                for attempt in (1, 2):  # a client retries once
                    try:
                        if download_slowly():
                            attempts.append(attempt)
                            break
                    except (OSError, HTTPException) as exc:
                        if attempt == 2:
                            failures.append(exc)
                            return
                else:
                    failures.append(AssertionError("wrong bytes twice"))
                    return

        downloader = threading.Thread(target=loop)
        downloader.start()
        try:
            wait_for("downloads to run", lambda: len(attempts) >= 2)
            edge.kill(busiest(edge))
            killed_after = len(attempts)
            wait_for("downloads after the kill", lambda: failures or len(attempts) >= killed_after + 5)
        finally:
            stop.set()
            downloader.join(120)
        assert not failures, failures
        assert len(attempts) >= killed_after + 5 and set(attempts) == {1, 2}, "the kill cut one download short"
        assert get(target) == (200, data)


def test_a_replica_started_with_an_empty_disk_serves_everything_and_verifies_the_next_version(
    service: Service, postgres_url: str, s3_server: dict[str, str], tmp_path: Path
) -> None:
    second = {**FILES, "notes.md": b"# app 1.1.0\n"}
    with edge_replicas(tmp_path / "edge", postgres_url, s3_server) as edge:
        connect(service, edge, edge.url)
        service.signed_bundle("1.0.0", FILES)
        assert service.wait("1.0.0", service.distribute("1.0.0"))["status"] == "Completed"
        edge.kill(1)
        edge.restart(1, empty=True)
        assert serves_all(edge.replicas[1], "1.0.0", FILES)
        for other in (0, 2):  # the emptied replica alone takes the next version, through nginx
            assert edge.replicas[other].stop() == 0
        service.signed_bundle("1.1.0", second)
        done = service.wait("1.1.0", service.distribute("1.1.0"))
        assert done["status"] == "Completed", done
        for other in (0, 2):
            edge.restart(other)
        for replica in edge.replicas:
            assert serves_all(replica, "1.1.0", second) and serves_all(replica, "1.0.0", FILES), replica.url


def test_postgres_restarted_during_a_distribution_the_job_completes_and_no_replica_serves_part(
    service: Service,
    slow_proxy: Any,
    postgres_server: PostgresServer,
    postgres_url: str,
    s3_server: dict[str, str],
    tmp_path: Path,
) -> None:
    faults = slow_proxy[0]
    with edge_replicas(tmp_path / "edge", postgres_url, s3_server) as edge:
        dist_id = distributing_slowly(service, edge, slow_proxy)
        postgres_server.restart()
        assert faults.upload_bytes < len(BIG), "the restart came after the upload"
        completes_whole(service, dist_id, lambda: edge.replicas, faults)


def lease_holder(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT lease_holder FROM distribution_jobs").fetchone()
    return None if row is None else row[0]


def test_when_the_pushing_service_replica_is_killed_the_other_finishes_the_job_once(
    slow_proxy: Any, postgres_server: PostgresServer, s3_server: dict[str, str], tmp_path: Path
) -> None:
    faults = slow_proxy[0]
    with postgres_server.database() as url, EdgeProcess(tmp_path / "edge") as edge:
        env = FAST_RETRIES | service_s3_environment(s3_server, f"service-{os.urandom(6).hex()}/")
        env |= {"DISTRIBUTION_DATABASE_URL": url, "DISTRIBUTION_JOB_LEASE_SECONDS": "3"}
        first = DistributionProcess(tmp_path / "service-1", env=env)
        processes = [first, DistributionProcess(tmp_path / "service-2", env=env, admin_token=first.admin_token)]
        try:
            for process in processes:
                process.start()
            services = [Service(p) for p in processes]
            trust(edge, public_key(services[0]))
            services[0].add_edge("edge-1", proxied(slow_proxy, edge.url), distributor_token(edge))
            services[0].signed_bundle("2.0.0", FILES)
            dist_id = services[0].distribute("2.0.0")
            wait_for("the upload to be under way", lambda: faults.upload_bytes >= 4 * MiB)
            holder = lease_holder(url.replace("+psycopg", ""))
            ids = [(p.data_dir / "replica-id").read_text().strip() for p in processes]
            pusher = ids.index(holder)  # type: ignore[arg-type]
            os.kill(processes[pusher].pid, signal.SIGKILL)
            processes[pusher].wait(30)
            sent_before = faults.upload_bytes
            faults.upload_rate = None
            done = services[1 - pusher].wait("2.0.0", dist_id)
        finally:
            for process in processes:
                process.stop()
                print(f"{process.base_dir.name} log, last lines:\n{process.log_tail()}")
        assert done["status"] == "Completed", done
        assert sent_before < len(BIG), "the kill came after the upload"
        status, bundles = http("GET", edge.url + BUNDLES, distributor_token(edge))
        assert status == 200 and [(b["name"], b["version"]) for b in bundles] == [("app", "2.0.0")], bundles
        assert serves_all(edge, "2.0.0", FILES)
        # the other replica resumed the big blob from the bytes the edge held
        assert faults.upload_bytes < len(BIG) + sent_before // 2, (faults.upload_bytes, sent_before)


class CountingDeletes:
    """Counts, per blob, the deletes that removed bytes still stored; looks, then waits a moment,
    then deletes, so that two collectors not kept apart would both find the blob there."""

    def __init__(self) -> None:
        self.freed: Counter[str] = Counter()

    def wrap(self, storage: Any) -> Any:
        delete_many = storage.delete_many

        async def counted(sha256s: Sequence[str]) -> None:
            present = [s for s in sha256s if await storage.exists(s)]
            await asyncio.sleep(0.3)
            await delete_many(sha256s)
            self.freed.update(present)

        storage.delete_many = counted
        return storage


async def collect_on_two_replicas(url: str, s3: dict[str, str], sha256s: list[str], tmp_path: Path) -> Counter[str]:
    """Two replicas' artifact services on one database and one bucket prefix collect ``sha256s`` at once."""
    counting = CountingDeletes()
    services = []
    for name in ("gc-1", "gc-2"):
        db = Database(url, local_dir=tmp_path / name)
        await db.open(catalog_migrations, edge_migrations)
        storage = counting.wrap(create_backend("s3", s3))
        await storage.open()
        artifacts = ArtifactService(Catalog(db), storage, ArtifactPolicy("edge", "1", 1 << 30), Quarantine(db))
        artifacts.pin_with(EdgeStore(db).pinned)
        services.append((db, artifacts))
    try:
        await asyncio.gather(*(artifacts.collect(sha256s) for _, artifacts in services))
    finally:
        for db, artifacts in services:
            await artifacts.storage.close()
            await db.close()
    return counting.freed


def test_garbage_collected_on_two_replicas_at_once_frees_each_unreferenced_blob_once_and_no_referenced_one(
    service: Service, postgres_url: str, s3_server: dict[str, str], tmp_path: Path
) -> None:
    s3_faults = S3Faults()
    s3_proxy = ThreadedServer(s3_proxy_app(s3_server["endpoint_url"], s3_faults)).start()
    kept = FILES["run.sh"]
    try:
        with edge_replicas(tmp_path / "edge", postgres_url, {**s3_server, "endpoint_url": s3_proxy.url}, 2) as edge:
            elsewhere = f"{edge.url}/artifactory/artifactory-edge-uploads/scripts/run.sh"
            assert put(elsewhere, edge.admin_token, kept) == 201
            connect(service, edge, edge.url)
            service.signed_bundle("1.0.0", FILES)
            assert service.wait("1.0.0", service.distribute("1.0.0"))["status"] == "Completed"
            # the edge cannot delete anything now: what it unreferences stays in the bucket
            s3_faults.add(S3Fault("DeleteObjects", 500, times=0), S3Fault("DeleteObject", 500, times=0))
            status, body = service.call(
                "POST", f"{V1}/distribution/app/1.0.0/delete", {"distribution_rules": EVERYWHERE}
            )
            assert status == 202, body
            assert service.wait("1.0.0", int(body["id"]))["status"] == "Completed"
            s3_faults.clear()
            for replica in edge.replicas:
                assert statuses(replica, "1.0.0", FILES) == [404] * len(FILES)
            prefix = edge.replicas[0].extra_env["EDGE_STORAGE_PREFIX"]
            shas = sorted(hashlib.sha256(d).hexdigest() for d in FILES.values())
            s3 = {k: s3_server[k] for k in ("endpoint_url", "bucket", "region", "access_key_id", "secret_access_key")}
            freed = asyncio.run(collect_on_two_replicas(postgres_url, s3 | {"prefix": prefix}, shas, tmp_path))
            unreferenced = {hashlib.sha256(FILES[p]).hexdigest() for p in ("big.bin", "notes.md")}
            assert freed == Counter(unreferenced), freed
            for replica in edge.replicas:
                assert get(f"{replica.url}/artifactory/artifactory-edge-uploads/scripts/run.sh") == (200, kept)
    finally:
        s3_proxy.stop()


def test_a_signed_url_made_by_one_replica_is_accepted_by_every_replica(
    postgres_url: str, s3_server: dict[str, str], tmp_path: Path
) -> None:
    with edge_replicas(tmp_path / "edge", postgres_url, s3_server) as edge:
        target = "artifactory-edge-uploads/partners/tool.bin"
        assert put(f"{edge.url}/artifactory/{target}", edge.admin_token, b"for a partner") == 201
        for maker in edge.replicas:
            status, url = http(
                "POST", maker.url + SIGNED_URLS, maker.admin_token, {"repo_path": f"/{target}", "valid_for_secs": 600}
            )
            assert status == 200, url
            query = url.partition("?")[2]
            for replica in edge.replicas:
                assert get(f"{replica.artifactory_url}/{target}?{query}") == (200, b"for a partner"), replica.url
                assert get(f"{replica.artifactory_url}/{target}?{query}x")[0] == 403
