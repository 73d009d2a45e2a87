"""A start whose body is the manifest itself, streamed (wire/protocol.py), and missing blobs a page at a time."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from edge.app import create_app
from edge.keys import transactions_key
from edge.schema import edge_migrations
from edge.staging import SCRATCH
from repository.schema import catalog_migrations
from tests.conftest import error_of, make_settings
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import FILES, TX, commit, manifest_of, put_blob, sha256, status_of, token, trust
from tests.test_edge_transactions import edge_settings as edge_settings  # noqa: F401  (on both engines)
from tests.test_manifest import canonical
from wire import protocol
from wire.manifest import encode

MANY = {f"file-{i:02d}.bin": f"content {i}".encode() for i in range(7)}


@pytest.fixture
async def dist(edge: Any, keys: KeySet) -> dict[str, str]:
    """The distributor's headers, on an edge that trusts alice."""
    await trust(edge, keys.alice)
    return await token(edge, "distributor")


def start_request(data: bytes, signature: bytes) -> dict[str, str]:
    return protocol.start_headers(len(data), signature.decode())


async def state(edge: Any) -> tuple[int, int, int, list[str]]:
    """Transactions, their recorded files and blobs, and scratch files a start left in staging."""
    transactions = edge.server.app[transactions_key]
    db = transactions.store.database

    def counts() -> tuple[int, int, int]:
        one = db.db.execute
        return (
            one("SELECT count(*) FROM transactions").fetchone()[0],
            one("SELECT count(*) FROM transaction_files").fetchone()[0],
            one("SELECT count(*) FROM transaction_blobs").fetchone()[0],
        )

    left = sorted(p.name for p in transactions.staging.root.glob(f"{SCRATCH}*"))
    return (*(await db.run(counts)), left)


async def test_a_manifest_sent_as_the_body_opens_the_transaction_and_commits(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    data = encode(manifest_of(FILES))
    headers = {**dist, **start_request(data, key_factory.sign(keys.alice, data))}
    resp = await edge.post(TX, data=data, headers=headers)
    assert resp.status == 201, await resp.text()
    started = await resp.json()
    assert started["transaction_id"] == sha256(data)
    assert started["missing"] == sorted(sha256(d) for d in FILES.values()) and started["missing_next"] is None
    for blob in FILES.values():
        assert (await put_blob(edge, started["transaction_id"], blob, dist)).status == 201
    assert (await commit(edge, started["transaction_id"], dist))["files"] == len(FILES)
    again = await edge.post(TX, data=data, headers=headers)
    assert again.status == 200 and (await again.json())["missing"] == []
    assert (await state(edge))[1:] == (0, len(FILES), []), "the files' record goes with the commit"


@pytest.mark.parametrize("case", ["media-type", "no-length", "no-signature", "signature-not-base64", "bad-signature"])
async def test_a_start_that_is_not_a_signed_manifest_body_is_a_clear_4xx_and_changes_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, case: str
) -> None:
    data = encode(manifest_of(FILES))
    headers = {**dist, **start_request(data, key_factory.sign(keys.alice, data))}
    body: Any = data
    if case == "media-type":
        headers["Content-Type"] = "application/octet-stream"
    elif case == "no-length":
        del headers["Content-Length"]

        async def chunks() -> Any:
            yield data

        body = chunks()
    elif case == "no-signature":
        del headers[protocol.SIGNATURE_HEADER]
    elif case == "signature-not-base64":
        headers[protocol.SIGNATURE_HEADER] = "not base64!"
    elif case == "bad-signature":
        other = encode(manifest_of({"a.bin": b"a"}))
        headers[protocol.SIGNATURE_HEADER] = base64.b64encode(key_factory.sign(keys.alice, other)).decode()
    status, message = await error_of(await edge.post(TX, data=body, headers=headers))
    expected = {"no-length": 411, "bad-signature": 422}.get(case, 400)
    assert status == expected, message
    assert await state(edge) == (0, 0, 0, [])


@pytest.mark.parametrize("over", [-1, 0, 1], ids=["limit-1", "limit", "limit+1"])
async def test_a_manifest_body_over_max_manifest_bytes_is_a_413_and_changes_nothing(
    aiohttp_client: Any, tmp_path: Any, keys: KeySet, key_factory: KeyFactory, over: int
) -> None:
    data = encode(manifest_of(MANY))
    settings = make_settings(tmp_path, max_manifest_bytes=len(data) - over)
    client = await aiohttp_client(create_app(settings))
    await trust(client, keys.alice)
    headers = {**await token(client, "distributor"), **start_request(data, key_factory.sign(keys.alice, data))}
    resp = await client.post(TX, data=data, headers=headers)
    if over > 0:
        assert (await error_of(resp))[0] == 413
        assert await state(client) == (0, 0, 0, [])
    else:
        assert resp.status == 201, await resp.text()
        assert (await state(client))[:2] == (1, len(MANY))


@pytest.mark.parametrize("case", ["not-canonical", "truncated-json", "unsorted"])
async def test_a_signed_body_that_is_not_a_canonical_manifest_is_a_400_and_changes_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, case: str
) -> None:
    data = encode(manifest_of(MANY))
    if case == "not-canonical":
        data = data.replace(b'"md5":', b'"md5" :', 1)
    elif case == "truncated-json":
        data = data[: len(data) // 2]
    else:  # the last two files swapped: the first page is recorded before this is found
        obj = json.loads(data)
        obj["artifacts"][-2:] = obj["artifacts"][:-3:-1]
        data = canonical(obj)
    headers = {**dist, **start_request(data, key_factory.sign(keys.alice, data))}
    status, message = await error_of(await edge.post(TX, data=data, headers=headers))
    assert status == 400, message
    assert await state(edge) == (0, 0, 0, [])


async def test_a_body_cut_short_opens_nothing_and_keeps_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    data = encode(manifest_of(FILES))
    headers = {**dist, **start_request(data, key_factory.sign(keys.alice, data)), "Host": "edge"}
    reader, writer = await asyncio.open_connection(edge.server.host, edge.server.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {TX} HTTP/1.1\r\n{head}\r\n".encode() + data[: len(data) // 2])
    await writer.drain()
    while not (await state(edge))[3]:  # the edge has taken the first half in
        await asyncio.sleep(0.01)
    writer.close()  # the sender goes away
    while (await state(edge))[3]:  # and the edge lets go of what it took
        await asyncio.sleep(0.01)
    assert await state(edge) == (0, 0, 0, [])
    resp = await edge.post(TX, data=data, headers={k: v for k, v in headers.items() if k != "Host"})
    assert resp.status == 201, "the whole body, sent again, opens the transaction"


async def test_missing_blobs_come_a_page_at_a_time_in_sha256_order(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "MISSING_PAGE", 3)
    data = encode(manifest_of(MANY))
    resp = await edge.post(TX, data=data, headers={**dist, **start_request(data, key_factory.sign(keys.alice, data))})
    started = await resp.json()
    tid, every = started["transaction_id"], sorted(sha256(d) for d in MANY.values())
    assert started["missing"] == every[:3] and started["missing_next"] == every[2]
    await put_blob(edge, tid, MANY["file-00.bin"], dist)
    held = sha256(MANY["file-00.bin"])
    rest = [s for s in every if s != held]
    pages, after = [], ""
    while after is not None:
        resp = await edge.get(f"{TX}/{tid}/missing", params={"after": after, "limit": "2"}, headers=dist)
        page = await resp.json()
        pages.append(page["missing"])
        after = page["missing_next"]
    assert [s for p in pages for s in p] == rest and all(len(p) <= 2 for p in pages)
    status = await status_of(edge, tid, dist)
    assert status["missing"] == rest[:3] and status["missing_next"] == rest[2]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "0"}, 400),
        ({"limit": "1"}, 200),
        ({"limit": str(protocol.MAX_MISSING_PAGE - 1)}, 200),
        ({"limit": str(protocol.MAX_MISSING_PAGE)}, 200),
        ({"limit": str(protocol.MAX_MISSING_PAGE + 1)}, 400),
        ({"limit": "-1"}, 400),
        ({"limit": "1e3"}, 400),
        ({"limit": "1" * 5000}, 400),  # past Python's digit limit for int(): still a 400
        ({"after": "xyz"}, 400),
        ({"after": "A" * 64}, 400),
        ({"from": "a"}, 400),
    ],
)
async def test_a_missing_page_request_is_checked(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, query: dict[str, str], status: int
) -> None:
    data = encode(manifest_of(MANY))
    resp = await edge.post(TX, data=data, headers={**dist, **start_request(data, key_factory.sign(keys.alice, data))})
    tid = (await resp.json())["transaction_id"]
    resp = await edge.get(f"{TX}/{tid}/missing", params=query, headers=dist)
    assert resp.status == status, await resp.text()
    if status == 200:
        page = await resp.json()
        assert len(page["missing"]) == min(len(MANY), int(query["limit"]))
    else:
        await error_of(resp)


async def test_a_transaction_open_before_files_were_recorded_is_ended_and_a_start_opens_it_again(
    tmp_path: Path, aiohttp_client: Any, keys: KeySet, key_factory: KeyFactory
) -> None:
    settings = make_settings(tmp_path)
    data = encode(manifest_of(MANY))
    settings.data_dir.mkdir(parents=True)
    old = sqlite_utils.Database(sqlite3.connect(settings.data_dir / "catalog.db"))
    catalog_migrations.apply(old)
    edge_migrations.apply(old, stop_before="m006_transaction_files")
    old.execute(
        "INSERT INTO transactions (id, name, version, state, signature, signer, created, expires, committed,"
        " files, bytes) VALUES (?, 'app', '1.0.0', 'OPEN', 'sig', 'fpr', 1, 9999999999999, NULL, 7, 70)",
        [sha256(data)],
    )
    old.execute("INSERT INTO transaction_manifests VALUES (?, ?)", [sha256(data), data])
    old.conn.commit()
    old.close()
    edge = await aiohttp_client(create_app(settings))
    await trust(edge, keys.alice)
    dist = await token(edge, "distributor")
    assert (await status_of(edge, sha256(data), dist))["state"] == "ABORTED"
    resp = await edge.post(TX, data=data, headers={**dist, **start_request(data, key_factory.sign(keys.alice, data))})
    assert resp.status == 201 and len((await resp.json())["missing"]) == len(MANY)
    assert (await state(edge))[:3] == (1, len(MANY), len(MANY))
