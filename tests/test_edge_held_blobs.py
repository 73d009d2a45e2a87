"""An edge on S3 knows which blobs it holds from its own records, not from a HEAD per blob.

Against a real SeaweedFS behind the fault proxy of tests/fault_servers.py, which records
every call the edge makes to the bucket. A transaction's start lists the blobs to send and
its commit checks that all arrived: on S3 both answer from the catalog (index entries, and
the blobs each transaction in flight or committed recorded as stored), and still never call
a blob held that is not.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from edge.app import create_app
from repository.http import keys as app_keys
from tests.conftest import make_settings
from tests.fault_servers import S3Faults
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import (
    TX,
    commit,
    download,
    manifest_of,
    sha256,
    signed,
    start,
    status_of,
    token,
    trust,
)
from tests.test_s3_faults import bucket as bucket  # noqa: F401  (the fixtures: SeaweedFS behind a fault proxy)
from tests.test_s3_faults import contents
from tests.test_s3_faults import faults as faults  # noqa: F401
from tests.test_s3_faults import params as params  # noqa: F401
from tests.test_s3_faults import prefix as prefix  # noqa: F401
from tests.test_s3_faults import proxy as proxy  # noqa: F401

SMALL = {f"lib/part-{i}.bin": os.urandom(1000 + i) for i in range(30)}
LARGE = {"app.bin": os.urandom(2 * 1024 * 1024)}  # over a batch's limit: sent alone, staged, then uploaded
FILES = SMALL | LARGE


async def s3_edge(aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], keys: KeySet) -> Any:
    """An edge storing its blobs in the bucket through the proxy, trusting alice; with the distributor's headers."""
    storage = {"backend": "s3", "redirect_downloads": False, **params}
    client = await aiohttp_client(create_app(make_settings(tmp_path, storage=storage)))
    await trust(client, keys.alice)
    return client, await token(client, "distributor")


async def send(client: Any, tid: str, headers: dict[str, str], missing: list[str]) -> None:
    """What the Distribution service does: small blobs in one batch, large ones alone."""
    by_sha = {sha256(data): data for data in FILES.values()}
    small = [s for s in missing if len(by_sha[s]) <= 1024 * 1024]
    if small:
        body = json.dumps(small).encode() + b"\n" + b"".join(by_sha[s] for s in small)
        resp = await client.post(f"{TX}/{tid}/blobs", data=body, headers=headers)
        assert resp.status == 200, await resp.text()
    for sha in missing:
        if sha not in small:
            resp = await client.put(f"{TX}/{tid}/blobs/{sha}", data=io.BytesIO(by_sha[sha]), headers=headers)
            assert resp.status == 201, await resp.text()


async def test_an_s3_edge_starts_sends_and_commits_a_bundle_without_a_head_to_the_bucket(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], faults: S3Faults, keys: KeySet, key_factory: KeyFactory
) -> None:
    client, headers = await s3_edge(aiohttp_client, tmp_path, params, keys)
    started = await start(client, signed(key_factory, keys.alice, manifest_of(FILES)), headers)
    assert sorted(started["missing"]) == sorted(sha256(d) for d in FILES.values())
    await send(client, started["transaction_id"], headers, started["missing"])
    assert (await client.get(f"{TX}/{started['transaction_id']}", headers=headers)).status == 200
    await commit(client, started["transaction_id"], headers)
    assert faults.calls("HeadObject") == [], "start, status and commit answer from the catalog"
    for path, data in FILES.items():
        assert await download(client, f"releases-local/app/1.0.0/{path}") == (200, data)
    # the next version shares all but one file: only that one is asked for, still without a HEAD
    changed = {**FILES, "lib/part-0.bin": b"new bytes"}
    again = await start(client, signed(key_factory, keys.alice, manifest_of(changed, version="1.0.1")), headers)
    assert again["missing"] == [sha256(b"new bytes")]
    assert faults.calls("HeadObject") == []


async def test_a_blob_stored_for_a_transaction_in_flight_is_held_for_another_and_not_asked_for_again(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], faults: S3Faults, keys: KeySet, key_factory: KeyFactory
) -> None:
    client, headers = await s3_edge(aiohttp_client, tmp_path, params, keys)
    first = await start(client, signed(key_factory, keys.alice, manifest_of(FILES, name="one")), headers)
    await send(client, first["transaction_id"], headers, first["missing"])
    second = await start(client, signed(key_factory, keys.alice, manifest_of(FILES, name="two")), headers)
    assert second["missing"] == []
    await commit(client, second["transaction_id"], headers)
    assert faults.calls("HeadObject") == []
    for path, data in FILES.items():
        assert await download(client, f"releases-local/two/1.0.0/{path}") == (200, data)


async def test_a_transaction_aborted_and_started_again_asks_again_for_the_blobs_it_had_stored(
    aiohttp_client: Any,
    tmp_path: Path,
    params: dict[str, Any],
    bucket: Any,
    keys: KeySet,
    key_factory: KeyFactory,
) -> None:
    client, headers = await s3_edge(aiohttp_client, tmp_path, params, keys)
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    started = await start(client, body, headers)
    await send(client, started["transaction_id"], headers, started["missing"])
    assert (await client.post(f"{TX}/{started['transaction_id']}/abort", headers=headers)).status == 200
    assert contents(bucket, params["bucket"], params["prefix"])["objects"] == [], "the abort collected them"
    reopened = await start(client, body, headers)
    assert sorted(reopened["missing"]) == sorted(started["missing"]), "what it had stored is gone, and it says so"
    assert (await client.post(f"{TX}/{started['transaction_id']}/commit", headers=headers)).status == 409
    await send(client, started["transaction_id"], headers, reopened["missing"])
    await commit(client, started["transaction_id"], headers)
    for path, data in FILES.items():
        assert await download(client, f"releases-local/app/1.0.0/{path}") == (200, data)


async def quarantine(client: Any, data: bytes) -> None:
    """What the scrub does with a blob whose stored bytes it found damaged."""
    artifacts = client.server.app[app_keys.artifacts]
    assert await artifacts.quarantine(sha256(data), len(data), "sha256 mismatch: test") is not None


async def test_quarantined_blobs_of_a_committed_bundle_on_s3_are_asked_for_again_and_their_repair_serves_them(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], keys: KeySet, key_factory: KeyFactory
) -> None:
    client, headers = await s3_edge(aiohttp_client, tmp_path, params, keys)
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    started = await start(client, body, headers)
    tid = started["transaction_id"]
    await send(client, tid, headers, started["missing"])
    await commit(client, tid, headers)
    damaged = {path: FILES[path] for path in ("lib/part-3.bin", "app.bin")}  # one sent in a batch, one alone
    for data in damaged.values():
        await quarantine(client, data)
    lost = sorted(sha256(data) for data in damaged.values())
    assert (await status_of(client, tid, headers))["missing"] == lost
    again = await start(client, body, headers, status=200)
    assert again["missing"] == lost, "the commit's own records do not claim them held"
    await send(client, tid, headers, again["missing"])
    assert (await status_of(client, tid, headers))["missing"] == []
    for path, data in damaged.items():
        assert await download(client, f"releases-local/app/1.0.0/{path}") == (200, data)


async def test_a_quarantined_blob_is_asked_for_by_the_next_bundle_that_shares_it_on_s3(
    aiohttp_client: Any, tmp_path: Path, params: dict[str, Any], keys: KeySet, key_factory: KeyFactory
) -> None:
    client, headers = await s3_edge(aiohttp_client, tmp_path, params, keys)
    first = await start(client, signed(key_factory, keys.alice, manifest_of(FILES, name="one")), headers)
    await send(client, first["transaction_id"], headers, first["missing"])
    await commit(client, first["transaction_id"], headers)
    damaged = LARGE["app.bin"]
    await quarantine(client, damaged)
    second = await start(client, signed(key_factory, keys.alice, manifest_of(FILES, name="two")), headers)
    assert second["missing"] == [sha256(damaged)], "neither the index nor the first bundle's records claim it"
    await commit(client, second["transaction_id"], headers, status=409)
    await send(client, second["transaction_id"], headers, second["missing"])
    await commit(client, second["transaction_id"], headers)
    for name in ("one", "two"):
        assert await download(client, f"releases-local/{name}/1.0.0/app.bin") == (200, damaged)
