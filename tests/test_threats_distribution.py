"""THREATS.md, "Supply chain" and "Crashes and faults": the lines no other test file covers.

Where a line is about processes, the edge is a real ``edge serve`` process, talked to over
HTTP (and killed with SIGKILL); the Distribution service runs in-process, pushing to it.
What is checked is what a user sees: which files an edge serves, and what a distribution's
status says.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.services import EdgeProcess
from distribution.app import create_app
from distribution.settings import DistributionSettings
from edge.app import create_app as create_edge_app
from edge.keys import transactions_key
from tests.conftest import ADMIN_TOKEN, admin, make_settings
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_distribution_jobs import V1, distribute, finished, signed_bundle, status_of, wait_for
from tests.test_edge_transactions import (
    BUNDLES,
    KEYS,
    REPO,
    TX,
    Remote,
    manifest_of,
    sha256,
    signed,
    staging_of,
    start,
    token,
    tx_id,
)
from tests.test_edge_transactions import trust as trust_key
from wire import protocol

MiB = 1024 * 1024


def dist_settings(data_dir: Path) -> DistributionSettings:
    return DistributionSettings(
        data_dir=data_dir,
        port=0,
        admin_token=ADMIN_TOKEN,
        repos=(REPO,),
        retry_backoff_cap=0.5,
        edge_read_timeout=5.0,
        max_server_errors=5,
    )


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await aiohttp_client(create_app(dist_settings(tmp_path / "dist")))


async def register_trusted(
    dist: Any, edge: EdgeProcess, name: str = "us-east-1", url: str | None = None, site: str = "s"
) -> None:
    """The edge trusts the service's key and is registered with a distributor token (or via ``url``)."""
    trust(edge, await (await dist.get(f"{V1}/keys/gpg/public")).text(), alias=f"dist-{name}")
    body = {"name": name, "url": url or edge.url, "site_name": site, "city_name": "c", "country_code": "US"}
    resp = await dist.post(f"{V1}/edges", json=body | {"token": distributor_token(edge)}, headers=admin())
    assert resp.status == 201, await resp.text()


def edge_bundles(edge: EdgeProcess) -> list[tuple[str, str]]:
    status, body = http("GET", edge.url + BUNDLES, edge.admin_token)
    assert status == 200, body
    return [(b["name"], b["version"]) for b in body]


def commits_logged(edge: EdgeProcess, name: str, version: str) -> int:
    return edge.log_path.read_text(errors="replace").count(f" committed: {name}/{version},")


def staged_parts(edge: EdgeProcess) -> list[Path]:
    return list((edge.data_dir / "staging").glob("*/*.part"))


FILES = {"app.tar.gz": os.urandom(3 * MiB), "README.md": b"# app\n", "notes.txt": b"notes\n"}


# -- Two distributions of the same bundle to the same edge at once ----------------------------


async def test_two_distributions_of_one_bundle_to_one_edge_at_once_commit_once_and_both_complete(
    dist: Any, edge_server: EdgeProcess
) -> None:
    """The service runs one job per registered edge at a time, so the edge registered under two
    names (two sites) gets two distributions of the bundle at once, as from two operators."""
    faults = Faults(upload_rate=4 * MiB, only="/blobs")  # keeps both pushes in flight together
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        await register_trusted(dist, edge_server, "us-east-1", proxy.url, site="east-a")
        await register_trusted(dist, edge_server, "us-east-1-twin", proxy.url, site="east-b")
        await signed_bundle(dist, "1.0", FILES)
        a, b = ([{"site_name": site, "city_name": "*", "country_codes": ["*"]}] for site in ("east-a", "east-b"))
        one, two, retry = await asyncio.gather(distribute(dist, "1.0", a), distribute(dist, "1.0", b),
                                               distribute(dist, "1.0", a))  # fmt: skip
        assert one != two and retry == one  # the same request again is the same distribution
        done = [await wait_for(dist, "1.0", d, finished) for d in (one, two)]
    finally:
        proxy.stop()
    assert [d["status"] for d in done] == ["Completed", "Completed"], done
    calls = [(method, path.rsplit("/", 1)[-1]) for method, path, _ in faults.seen]
    starts = [i for i, c in enumerate(calls) if c == ("POST", "transactions")]
    # both transactions were started before either commit; a push that finds the bundle committed
    # under it (409 on a late upload) starts again, finds it COMMITTED, and reports the same result
    assert len(starts) >= 2 and starts[1] < calls.index(("POST", "commit")), calls
    assert edge_bundles(edge_server) == [("app", "1.0")]
    assert commits_logged(edge_server, "app", "1.0") == 1  # exactly one commit; the other found it done
    for path, data in FILES.items():
        assert download(edge_server.url, f"{REPO}/app/1.0/{path}") == (200, data)
    assert not staged_parts(edge_server)


# -- Same name and version, other content; identical re-push ---------------------------------


async def test_the_same_name_and_version_with_other_content_from_another_service_is_refused_and_the_first_still_served(
    aiohttp_client: Any, tmp_path: Path, edge_server: EdgeProcess
) -> None:
    first = await aiohttp_client(create_app(dist_settings(tmp_path / "first")))
    second = await aiohttp_client(create_app(dist_settings(tmp_path / "second")))
    for name, service in (("first", first), ("second", second)):
        await register_trusted(service, edge_server, name=name)
    await signed_bundle(first, "1.0", FILES)
    assert (await wait_for(first, "1.0", await distribute(first, "1.0"), finished))["status"] == "Completed"
    other = {**FILES, "README.md": b"# another app\n"}
    await signed_bundle(second, "1.0", other)
    refused = await wait_for(second, "1.0", await distribute(second, "1.0"), finished)
    assert refused["status"] == "Failed", refused
    (site,) = refused["sites"]
    assert "409" in site["general_error"] and "another manifest" in site["general_error"], site
    for path, data in FILES.items():
        assert download(edge_server.url, f"{REPO}/app/1.0/{path}") == (200, data)
    assert edge_bundles(edge_server) == [("app", "1.0")]
    # the identical bundle again: the same success, nothing sent
    again = await wait_for(first, "1.0", await distribute(first, "1.0"), finished)
    assert again["status"] == "Completed" and again["sites"][0]["sent_bytes"] == 0, again
    assert commits_logged(edge_server, "app", "1.0") == 1


# -- A misbehaving client sends the wrong bytes to a real edge -----------------------------------


def _chunked(data: bytes) -> Iterator[bytes]:
    for offset in range(0, len(data), 64 * 1024):
        yield data[offset : offset + 64 * 1024]


@pytest.mark.parametrize(
    ("damage", "chunked"),
    [
        pytest.param(lambda b: b[:1000] + bytes([b[1000] ^ 0x40]) + b[1001:], False, id="flipped-byte"),
        pytest.param(lambda b: b[:-1], False, id="missing-byte"),
        pytest.param(lambda b: b + b"\0", False, id="extra-byte"),
        pytest.param(lambda b: b + b"\0", True, id="extra-byte-chunked-no-length"),
        pytest.param(lambda b: b[:500_000] + b[500_001:] + b"x", True, id="shifted-chunked-no-length"),
    ],
)
def test_a_real_edge_refuses_a_blob_with_wrong_bytes_and_keeps_nothing_of_it(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory, damage: Any, chunked: bool
) -> None:
    data = os.urandom(MiB)
    files = {"big.bin": data, "small.txt": b"small"}
    body = signed(key_factory, keys.alice, manifest_of(files))
    tid = tx_id(body)
    with EdgeProcess(tmp_path / "edge") as edge:
        remote = Remote(edge)
        assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
        assert remote.call("POST", TX, json=body).status_code == 201
        url = f"{TX}/{tid}/blobs/{sha256(data)}"
        bad = damage(data)
        resp = remote.call("PUT", url, data=_chunked(bad) if chunked else bad)
        assert resp.status_code == 422, resp.text
        assert sha256(data) in resp.json()["errors"][0]["message"]
        assert remote.call("HEAD", url).headers["X-Received-Bytes"] == "0"
        assert not staged_parts(edge)
        assert remote.call("GET", f"{TX}/{tid}").json()["missing"] == sorted([sha256(data), sha256(b"small")])
        assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(b'small')}", data=b"small").status_code == 201
        assert remote.call("POST", f"{TX}/{tid}/commit").status_code == 409  # the big blob is missing
        assert remote.visible(f"{REPO}/app/1.0.0/small.txt") == 404
        # the right bytes after all that: accepted and served
        assert remote.call("PUT", url, data=data).status_code == 201
        assert remote.call("POST", f"{TX}/{tid}/commit").status_code == 200
        assert download(edge.url, f"{REPO}/app/1.0.0/big.bin") == (200, data)


# -- kill -9 the edge while a commit arrives ---------------------------------------------------


def _send_commit(edge: EdgeProcess, tid: str, token: str) -> socket.socket:
    """A commit request written whole to the edge's socket; its answer is never read."""
    sock = socket.create_connection(("127.0.0.1", edge.port or 0), timeout=5)
    sock.sendall(
        f"POST {TX}/{tid}/commit HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    return sock


def _visible(session: requests.Session, edge: EdgeProcess, version: str, files: dict[str, bytes]) -> int:
    """How many of the bundle's files the edge serves, checking the bytes of each one served."""
    served = 0
    for path, data in files.items():
        resp = session.get(f"{edge.artifactory_url}/{REPO}/app/{version}/{path}", timeout=30)
        assert resp.status_code in (200, 404), resp.text
        if resp.status_code == 200:
            assert resp.content == data
            served += 1
    return served


def test_an_edge_killed_as_a_commit_arrives_shows_all_or_nothing_and_a_retried_commit_completes(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    files = {f"f{i:03}.txt": f"file {i}\n".encode() * (i + 1) for i in range(150)}
    edge = EdgeProcess(tmp_path / "edge").start()
    outcomes = []
    try:
        remote = Remote(edge)
        assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
        token = remote.session.headers["Authorization"]
        # from before the edge reads the request to after it answers; the middle ones land in the commit
        delays = (0.0, 0.015, 0.025, 0.035, 0.05, 0.2)
        for i, delay in enumerate(delays):
            version = f"1.{i}"
            body = signed(key_factory, keys.alice, manifest_of(files, version=version))
            tid = tx_id(body)
            assert remote.call("POST", TX, json=body).status_code == 201
            for data in files.values():  # the same bytes each round: only the first round stores them
                assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(data)}", data=data).status_code in (200, 201)
            sock = _send_commit(edge, tid, str(token))
            time.sleep(delay)
            os.kill(edge.pid, signal.SIGKILL)
            sock.close()
            assert edge.wait(20) == -signal.SIGKILL
            edge.start()
            served = _visible(remote.session, edge, version, files)
            assert served in (0, len(files)), f"a partial bundle is visible: {served} of {len(files)} files"
            state = remote.call("GET", f"{TX}/{tid}").json()["state"]
            assert state == ("COMMITTED" if served else "OPEN")
            outcomes.append(state)
            retried = remote.call("POST", f"{TX}/{tid}/commit")
            assert retried.status_code == 200 and retried.json()["state"] == "COMMITTED", retried.text
            assert _visible(remote.session, edge, version, files) == len(files)
            assert not staged_parts(edge) and not (edge.data_dir / "staging" / tid).exists()
        assert edge_bundles(edge) == [("app", f"1.{i}") for i in range(len(delays))]
    finally:
        code = edge.stop()
    assert code == 0, edge.log_tail()
    print("state found after each kill:", outcomes)


# -- kill -9 the edge mid-upload while the Distribution service pushes -----------------------------


async def test_an_edge_killed_mid_push_restarts_and_the_distribution_completes_with_nothing_partial_before(
    dist: Any, edge_server: EdgeProcess
) -> None:
    big = os.urandom(8 * MiB)
    faults = Faults(upload_rate=2 * MiB, only="/blobs")
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        await register_trusted(dist, edge_server, url=proxy.url)
        await signed_bundle(dist, "2.0", {"big.bin": big, "small.txt": b"small\n"})
        dist_id = await distribute(dist, "2.0")
        deadline = time.monotonic() + 30
        while faults.upload_bytes < 3 * MiB:
            if time.monotonic() >= deadline:  # a hang guard, not a speed check
                pytest.fail(faults)
            await asyncio.sleep(0.05)
        os.kill(edge_server.pid, signal.SIGKILL)
        assert edge_server.wait(20) == -signal.SIGKILL
        assert (await status_of(dist, "2.0", dist_id))["status"] != "Completed"
        edge_server.start()  # the same port: the proxy reaches it again
        assert download(edge_server.url, f"{REPO}/app/2.0/small.txt")[0] == 404
        faults.upload_rate = None
        done = await wait_for(dist, "2.0", dist_id, finished)
    finally:
        proxy.stop()
    assert done["status"] == "Completed", done
    assert download(edge_server.url, f"{REPO}/app/2.0/big.bin") == (200, big)
    assert not staged_parts(edge_server)


# -- Duplicate upload: what test_edge_transactions.py does not try -------------------------------


def test_a_duplicate_upload_is_answered_as_held_and_an_upload_after_commit_changes_nothing(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    files = {"a.bin": os.urandom(200_000), "b.txt": b"b"}
    body = signed(key_factory, keys.alice, manifest_of(files))
    tid = tx_id(body)
    with EdgeProcess(tmp_path / "edge") as edge:
        remote = Remote(edge)
        assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
        assert remote.call("POST", TX, json=body).status_code == 201
        url = f"{TX}/{tid}/blobs/{sha256(files['a.bin'])}"
        first = remote.call("PUT", url, data=files["a.bin"])
        again = remote.call("PUT", url, data=files["a.bin"])  # a retry after a lost answer
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json() == again.json() == {"sha256": sha256(files["a.bin"]), "size": 200_000, "received": 200_000}
        assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(b'b')}", data=b"b").status_code == 201
        assert remote.call("POST", f"{TX}/{tid}/commit").status_code == 200
        late = remote.call("PUT", url, data=b"x" * 200_000)  # a late retry with other bytes
        assert late.status_code == 409 and "COMMITTED" in late.text
        assert download(edge.url, f"{REPO}/app/1.0.0/a.bin") == (200, files["a.bin"])
        assert not staged_parts(edge)


# -- Oversized body or header, chunked body with no length, compressed bomb ------------------------


async def test_oversized_chunked_or_compressed_bodies_and_huge_headers_are_refused_in_bounded_memory(
    aiohttp_client: Any, tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    client = await aiohttp_client(create_edge_app(make_settings(tmp_path, max_manifest_bytes=MiB)))
    await trust_key(client, keys.alice)
    headers = await token(client, "distributor")
    # 64 MiB of manifest in 64 KiB of gzip: the edge inflates it as it reads, and stops at the limit
    bomb = gzip.compress(b'{"manifest": "' + b"x" * (64 * MiB) + b'", "signature": ""}', 9)
    assert len(bomb) < MiB
    tracemalloc.start()
    try:
        resp = await client.post(TX, data=bomb, headers={**headers, "Content-Encoding": "gzip"})
        assert resp.status == 413, await resp.text()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak

    async def endless(piece: bytes, times: int) -> AsyncIterator[bytes]:
        for _ in range(times):
            yield piece

    json_type = {**headers, "Content-Type": "application/json"}
    chunked = await client.post(TX, data=endless(b"y" * 64 * 1024, 64), headers=json_type)  # no Content-Length
    assert chunked.status == 413 and chunked.request_info.headers.get("Transfer-Encoding") == "chunked"
    # the manifest as the body: its length is declared, and what inflates past it is refused
    signed_headers = {**headers, **protocol.start_headers(len(bomb), "sig")}
    del signed_headers["Content-Length"]
    no_length = await client.post(TX, data=endless(b"y" * 64 * 1024, 64), headers=signed_headers)
    assert no_length.status == 411
    tracemalloc.start()
    try:
        inflated = await client.post(TX, data=bomb, headers={**signed_headers, "Content-Encoding": "gzip"})
        assert inflated.status == 400 and "longer than its Content-Length" in await inflated.text()
        assert tracemalloc.get_traced_memory()[1] < 16 * MiB
    finally:
        tracemalloc.stop()
    assert not list(client.server.app[transactions_key].staging.root.iterdir())
    data = os.urandom(1000)
    tid = (await start(client, signed(key_factory, keys.alice, manifest_of({"a.bin": data})), headers))[
        "transaction_id"
    ]
    blob_bomb = await client.put(
        f"{TX}/{tid}/blobs/{sha256(data)}", data=endless(bomb, 1), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert blob_bomb.status == 422 and "longer than" in await blob_bomb.text()
    assert not list(staging_of(client, tid).glob("*.part"))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(f"GET /artifactory/api/system/ping HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 100_000}\r\n\r\n".encode())
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.0 400")
    finally:
        writer.close()
