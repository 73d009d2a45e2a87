"""Small blobs in one upload (POST .../transactions/{id}/blobs): what the Distribution service
sends for every blob of at most 1 MiB, and every way its body can be wrong."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from tests.conftest import error_of
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import TX, commit, download, manifest_of, sha256, signed, start, token, trust
from wire.batch import BATCH_BLOB_MAX, BATCH_MAX_BLOBS, encode

FILES = {f"lib/part-{i}.bin": os.urandom(1000 + i * 517) for i in range(40)} | {
    "empty.txt": b"",
    "big.bin": os.urandom(BATCH_BLOB_MAX + 1),
}
SMALL = {path: data for path, data in FILES.items() if len(data) <= BATCH_BLOB_MAX}


def body_of(blobs: list[bytes], head: list[str] | None = None) -> bytes:
    listed = head if head is not None else [sha256(b) for b in blobs]
    return json.dumps(listed).encode() + b"\n" + b"".join(blobs)


@pytest.fixture
async def opened(any_edge: Any, keys: KeySet, key_factory: KeyFactory) -> tuple[Any, str, dict[str, str]]:
    """An edge (every backend) with an open transaction of FILES; its id and the distributor's headers."""
    await trust(any_edge, keys.alice)
    headers = await token(any_edge, "distributor")
    started = await start(any_edge, signed(key_factory, keys.alice, manifest_of(FILES)), headers)
    assert len(started["missing"]) == len(FILES)
    return any_edge, started["transaction_id"], headers


async def missing(client: Any, tid: str, headers: dict[str, str]) -> set[str]:
    resp = await client.get(f"{TX}/{tid}", headers=headers)
    return set((await resp.json())["missing"])


async def test_one_request_carries_every_small_blob_and_the_bundle_commits(opened: Any) -> None:
    client, tid, headers = opened
    blobs = list(SMALL.values())
    resp = await client.post(f"{TX}/{tid}/blobs", data=body_of(blobs), headers=headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"blobs": len(blobs), "size": sum(map(len, blobs))}
    assert await missing(client, tid, headers) == {sha256(FILES["big.bin"])}
    again = await client.post(f"{TX}/{tid}/blobs", data=body_of(blobs[:3]), headers=headers)
    assert again.status == 200, "a batch retried after a lost answer gets the same success"
    put = await client.put(
        f"{TX}/{tid}/blobs/{sha256(FILES['big.bin'])}", data=io.BytesIO(FILES["big.bin"]), headers=headers
    )
    assert put.status == 201
    await commit(client, tid, headers)
    for path in ("lib/part-7.bin", "empty.txt", "big.bin"):
        assert await download(client, f"releases-local/app/1.0.0/{path}") == (200, FILES[path])


async def test_a_wrong_blob_is_refused_and_only_the_right_ones_before_it_are_kept(opened: Any) -> None:
    client, tid, headers = opened
    good, bad, after = FILES["lib/part-1.bin"], bytearray(FILES["lib/part-2.bin"]), FILES["lib/part-3.bin"]
    bad[10] ^= 1
    head = [sha256(good), sha256(FILES["lib/part-2.bin"]), sha256(after)]
    resp = await client.post(f"{TX}/{tid}/blobs", data=body_of([good, bytes(bad), after], head), headers=headers)
    status, message = await error_of(resp)
    assert status == 422 and sha256(FILES["lib/part-2.bin"]) in message
    left = await missing(client, tid, headers)
    assert sha256(good) not in left and {head[1], head[2]} <= left
    assert (await client.post(f"{TX}/{tid}/commit", headers=headers)).status == 409
    assert (await download(client, "releases-local/app/1.0.0/lib/part-1.bin"))[0] == 404


@pytest.mark.parametrize(
    "case",
    [
        "no head line",
        "head not a list",
        "head nested too deeply",
        "head with a bad sha",
        "duplicate shas",
        "empty list",
        "too many blobs",
        "a blob of another bundle",
        "a blob too large for a batch",
        "body ends early",
        "body too long",
        "content-length wrong",
    ],
)
async def test_a_bad_batch_is_refused_with_a_clear_error_and_nothing_is_stored(opened: Any, case: str) -> None:
    client, tid, headers = opened
    blobs = [FILES["lib/part-5.bin"], FILES["lib/part-6.bin"]]
    shas = [sha256(b) for b in blobs]
    extra: dict[str, str] = {}
    data = {
        "no head line": b"".join(blobs)[:500],
        "head not a list": b'{"blobs": 1}\n' + b"".join(blobs),
        "head nested too deeply": b"[" * 60_000 + b"\n" + b"".join(blobs),
        "head with a bad sha": body_of(blobs, [shas[0], "X" * 64]),
        "duplicate shas": body_of([blobs[0], blobs[0]], [shas[0], shas[0]]),
        "empty list": b"[]\n",
        "too many blobs": body_of([], [f"{i:064x}" for i in range(BATCH_MAX_BLOBS + 1)]),
        "a blob of another bundle": body_of([blobs[0], b"stranger"]),
        "a blob too large for a batch": body_of([blobs[0], FILES["big.bin"]]),
        "body ends early": body_of(blobs)[:-10],
        "body too long": body_of(blobs) + b"trailing",
        "content-length wrong": body_of(blobs),
    }[case]
    if case == "content-length wrong":
        extra["Content-Length"] = str(len(data) - 1)
    expected = {
        "a blob of another bundle": 404,
        "body ends early": 422,
        "body too long": 422,
    }.get(case, 400)
    before = await missing(client, tid, headers)
    if case.startswith("body"):  # chunked, no length to check up front: the framing itself is off

        async def chunked(data: bytes = data) -> Any:
            yield data

        resp = await client.post(f"{TX}/{tid}/blobs", data=chunked(), headers=headers)
    else:
        resp = await client.post(f"{TX}/{tid}/blobs", data=io.BytesIO(data), headers={**headers, **extra})
    status, message = await error_of(resp)
    assert status == expected, message
    after = await missing(client, tid, headers)
    if case == "body too long":
        assert after == before - set(shas), "the right blobs before the flaw stay; nothing else"
    elif case == "body ends early":
        assert after == before - {shas[0]}, "the right blob before the flaw stays; nothing else"
    else:
        assert after == before


async def test_only_a_distributor_may_send_a_batch_and_only_to_an_open_transaction(opened: Any) -> None:
    client, tid, headers = opened
    data = body_of([FILES["lib/part-1.bin"]])
    assert (await client.post(f"{TX}/{tid}/blobs", data=data)).status == 401
    reader = await token(client, "reader")
    assert (await client.post(f"{TX}/{tid}/blobs", data=data, headers=reader)).status == 403
    assert (await client.post(f"{TX}/{tid}/abort", headers=headers)).status == 200
    status, message = await error_of(await client.post(f"{TX}/{tid}/blobs", data=data, headers=headers))
    assert status == 409 and "ABORTED" in message
    assert (await client.post(f"{TX}/{'0' * 64}/blobs", data=data, headers=headers)).status == 404


async def test_a_batch_of_the_most_blobs_with_one_at_the_byte_limit_is_stored_and_the_bundle_commits(
    edge: Any, keys: KeySet, key_factory: KeyFactory
) -> None:
    """The largest batch the wire encoder writes: as many blobs as a batch may carry (so the
    longest head line), one of them as large as a batched blob may be."""
    files = {f"tiny/{i:04d}.bin": i.to_bytes(2, "big") for i in range(BATCH_MAX_BLOBS - 1)}
    files["largest.bin"] = os.urandom(BATCH_BLOB_MAX)
    await trust(edge, keys.alice)
    headers = await token(edge, "distributor")
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(files)), headers)
    tid = started["transaction_id"]
    body = encode([(sha256(data), data) for data in files.values()])
    resp = await edge.post(f"{TX}/{tid}/blobs", data=io.BytesIO(body), headers=headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"blobs": BATCH_MAX_BLOBS, "size": sum(map(len, files.values()))}
    assert await missing(edge, tid, headers) == set()
    await commit(edge, tid, headers)
    for path in ("tiny/0000.bin", "tiny/0998.bin", "largest.bin"):
        assert await download(edge, f"releases-local/app/1.0.0/{path}") == (200, files[path])
