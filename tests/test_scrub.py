"""The scrub in one process: its settings and their limits, its pace, its lease (once per node),
its resume after a stop, its API, and the S3 backend's part (the end-to-end story with real
processes is tests/test_scrub_e2e.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from distribution.settings import load_distribution_settings
from edge.app import create_app
from edge.settings import load_edge_settings
from repository import scrub
from repository.artifacts import ArtifactService
from repository.catalog import Catalog, Repo
from repository.db import Database
from repository.http import keys
from repository.http.scrub_api import scrubber_key
from repository.http.setup import database
from repository.leases import Leases
from repository.policy import ArtifactPolicy
from repository.quarantine import Quarantine, QuarantinedBlob
from repository.schema import catalog_migrations
from repository.scrub import LEASE, Pacer, Scrubber
from repository.scrub_store import CatalogBlobs, ScrubStore
from repository.settings import DAY, MIN_SCRUB_RATE, ScrubSettings, SettingsError
from storage_backends import create_backend
from tests.conftest import UPLOADS, admin, error_of, make_settings, storage_settings, upload

QUIET = ScrubSettings(enabled=False, rate=1024**3)  # passes only when asked, at full speed


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("RATE", 0, False),
        ("RATE", 1, False),
        ("RATE", MIN_SCRUB_RATE - 1, False),
        ("RATE", MIN_SCRUB_RATE, True),
        ("RATE", MIN_SCRUB_RATE + 1, True),
        ("INTERVAL", 0, False),
        ("INTERVAL", 1, True),
        ("INTERVAL", 365 * DAY - 1, True),
        ("INTERVAL", 365 * DAY, True),
        ("INTERVAL", 365 * DAY + 1, False),
    ],
)
@pytest.mark.parametrize("service", ["EDGE", "DISTRIBUTION"])
def test_scrub_settings_are_checked_at_their_limits_on_both_services(
    service: str, key: str, value: int, ok: bool
) -> None:
    load = load_edge_settings if service == "EDGE" else load_distribution_settings
    env = {f"{service}_SCRUB_{key}": str(value)}
    if ok:
        assert getattr(load(env=env).scrub, key.lower()) == value
    else:
        with pytest.raises(SettingsError, match=f"scrub.{key.lower()}"):
            load(env=env)


def test_the_default_scrub_is_on_and_gentle() -> None:
    settings = load_edge_settings(env={}).scrub
    assert (settings.enabled, settings.rate, settings.interval) == (True, 4 * 1024 * 1024, 7 * DAY)
    assert load_edge_settings(env={"EDGE_SCRUB_ENABLED": "false"}).scrub.enabled is False


async def test_the_pace_never_runs_ahead_of_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(scrub.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(scrub.asyncio, "sleep", sleep)
    pacer = Pacer(1000)
    for _ in range(4):
        await pacer.spent(500)  # read in no time at all
    assert sum(slept) == pytest.approx(2.0), "2000 bytes at 1000 bytes/s take 2 s"
    clock[0] += 10  # a slow disk: nothing to make up for
    slept.clear()
    await pacer.spent(500)
    assert slept == []


@pytest.fixture
async def node(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await aiohttp_client(create_app(make_settings(tmp_path, scrub=QUIET)))


async def finished(client: Any) -> dict[str, Any]:
    for _ in range(600):
        status = await (await client.get("/artifactory/api/scrub", headers=admin())).json()
        if not status["running"]:
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    pytest.fail("the pass did not end")  # a hang guard, not a speed check


async def test_only_an_admin_may_see_or_start_a_scrub(node: Any) -> None:
    made = await node.post("/access/api/v1/tokens", json={"role": "deployer", "username": "ci"}, headers=admin())
    deployer = {"Authorization": f"Bearer {(await made.json())['access_token']}"}
    for method in ("GET", "POST"):
        assert (await error_of(await node.request(method, "/artifactory/api/scrub")))[0] == 401
        assert (await error_of(await node.request(method, "/artifactory/api/scrub", headers=deployer)))[0] == 403
    status = await (await node.get("/artifactory/api/scrub", headers=admin())).json()
    assert status == {"enabled": False, "rate": 1024**3, "interval": 7 * DAY, "running": False, "pass": None,
                      "last_pass": None, "quarantined": []}  # fmt: skip


async def test_a_pass_runs_once_per_node_and_waits_for_another_process_lease(node: Any) -> None:
    await upload(node, "a.bin", b"a")
    other = Leases(node.server.app[database], holder="another-process")
    assert await other.take(LEASE, 60)
    refused = await node.post("/artifactory/api/scrub", headers=admin())
    status, message = await error_of(refused)
    assert status == 409 and "another process" in message
    assert await node.server.app[scrubber_key].run_pass() is False
    await other.give_back(LEASE)
    started = await node.post("/artifactory/api/scrub", headers=admin())
    assert started.status == 202 and (await started.json())["running"] is True
    done = await finished(node)
    assert done["last_pass"]["blobs"] == 1 and done["pass"] is None
    assert await other.take(LEASE, 60), "the pass gave the lease back"


async def test_a_lease_whose_holder_stopped_renewing_it_is_taken_over(node: Any) -> None:
    db = node.server.app[database]
    gone, here = Leases(db, holder="crashed"), Leases(db, holder="alive")
    assert await gone.take(LEASE, 0.05)
    assert not await here.take(LEASE, 60)
    await asyncio.sleep(0.1)  # the crashed holder never renews
    assert await here.take(LEASE, 60) and await here.holder_of(LEASE) == "alive"


async def test_a_pass_cut_short_resumes_after_the_last_blob_it_checked(node: Any) -> None:
    blobs = sorted(hashlib.sha256(data).hexdigest() for data in (b"1", b"2", b"3", b"4"))
    for i, data in enumerate((b"1", b"2", b"3", b"4")):
        await upload(node, f"f{i}", data)
    scrubber = node.server.app[scrubber_key]
    await scrubber.store.begin(0)
    await scrubber.store.advance(blobs[1], 2, 2, 0)  # where a stopped process left it
    assert await scrubber.run_pass()
    progress = await scrubber.progress()
    assert (progress.started, progress.last_blobs, progress.last_started) == (None, 4, 0)
    metrics = await (await node.get("/metrics")).text()
    assert "edge_scrub_blobs_total 2.0" in metrics, "only the blobs after the cursor were read"


async def test_a_blob_changed_in_s3_is_quarantined_and_never_redirected_to(
    aiohttp_client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = make_settings(tmp_path, storage=storage_settings("s3", tmp_path, request), scrub=QUIET)
    client = await aiohttp_client(create_app(settings))
    data = os.urandom(200_000)
    await upload(client, "s3/file.bin", data)
    storage = client.server.app[keys.storage]
    await asyncio.to_thread(
        storage.client.put_object, Bucket=storage.bucket, Key=storage.blob_key(hashlib.sha256(data).hexdigest()),
        Body=data[:-1] + bytes([data[-1] ^ 1]),
    )  # fmt: skip
    assert (await client.post("/artifactory/api/scrub", headers=admin())).status == 202
    (blob,) = (await finished(client))["quarantined"]
    assert blob["location"].startswith(f"s3://{storage.bucket}/") and blob["paths"] == [f"{UPLOADS}/s3/file.bin"]
    resp = await client.get(f"/artifactory/{UPLOADS}/s3/file.bin", allow_redirects=False)
    status, message = await error_of(resp)
    assert status == 409 and "quarantined" in message
    await upload(client, "s3/again.bin", data)  # the same bytes deployed again restore the file
    resp = await client.get(f"/artifactory/{UPLOADS}/s3/file.bin", allow_redirects=False)
    assert resp.status == 302


async def test_a_blob_held_back_although_its_right_bytes_are_stored_is_served_again_after_a_pass(node: Any) -> None:
    """Say another process restored the bytes while this one's view of the quarantine was stale."""
    data = b"right bytes, back in the store"
    await upload(node, "back.txt", data)
    artifacts = node.server.app[keys.artifacts]
    sha = hashlib.sha256(data).hexdigest()
    await artifacts.quarantined.add(QuarantinedBlob(sha, len(data), 0, "sha256 mismatch: test", None))
    assert (await error_of(await node.get(f"/artifactory/{UPLOADS}/back.txt")))[0] == 409
    assert await node.server.app[scrubber_key].run_pass()
    resp = await node.get(f"/artifactory/{UPLOADS}/back.txt")
    assert resp.status == 200 and await resp.read() == data


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_pass_on_either_engine_quarantines_rotten_bytes_and_runs_in_one_replica_at_a_time(
    db_target: str, tmp_path: Path
) -> None:
    """The scrub's stores (its progress, the lease, the quarantine, the blobs to check) on sqlite
    and on a PostgreSQL that two replicas share."""
    storage = create_backend("local", {"root": str(tmp_path / "blobs")})
    await storage.open()
    nodes = [Database(db_target, local_dir=tmp_path / name) for name in ("one", "two")]
    for db in nodes:
        await db.open(catalog_migrations)
    one, two = (
        Scrubber(
            ArtifactService(Catalog(db), storage, ArtifactPolicy("node", "1", 1 << 20), Quarantine(db)),
            ScrubStore(db), Leases(db), CatalogBlobs(db), QUIET,
        )
        for db in nodes
    )  # fmt: skip
    try:
        await one.artifacts.catalog.ensure_repo(Repo("r"))
        files = {f"f{i}.bin": f"bytes of file {i}".encode() for i in range(4)}
        for path, data in files.items():
            await one.artifacts.deploy("r", path, _body(data), expected={}, declared_size=None, user="u")
        rotten = hashlib.sha256(files["f2.bin"]).hexdigest()
        blob = storage.blob_path(rotten)  # type: ignore[attr-defined]
        os.chmod(blob, 0o600)
        blob.write_bytes(b"X" * len(files["f2.bin"]))

        assert await two.leases.take(LEASE, 60)
        assert await one.run_pass() is False, "the other replica holds the pass"
        await two.leases.give_back(LEASE)
        assert await one.run_pass() is True
        done = await two.progress()
        assert (done.started, done.last_blobs, done.last_quarantined) == (None, 4, 1)
        assert [b.sha256 for b in await two.artifacts.quarantined.blobs()] == [rotten]
        assert await two.artifacts.quarantined.paths(rotten) == [("r", "f2.bin")]
        assert await two.leases.take(LEASE, 60), "the pass gave the lease back"
    finally:
        for db in nodes:
            await db.close()
        await storage.close()
