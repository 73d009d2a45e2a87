"""A remote repo on an edge whose blobs live in S3 (a real SeaweedFS on loopback)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from devstack.services import EdgeProcess
from tests.fault_servers import ThreadedServer
from tests.remote_setup import CUT_SHORT, add_remote, cached, get, start_edge, upload
from tests.remote_upstreams import Relay, relay_app

DATA = os.urandom(1024 * 1024 + 3)


def _objects(s3_server: dict[str, str], prefix: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        region_name=s3_server["region"],
        aws_access_key_id=s3_server["access_key_id"],
        aws_secret_access_key=s3_server["secret_access_key"],
    )
    found = client.list_objects_v2(Bucket=s3_server["bucket"], Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in found]


@pytest.fixture
def s3_pair(s3_server: dict[str, str], tmp_path: Path) -> Iterator[tuple[EdgeProcess, EdgeProcess, Relay, str]]:
    prefix = f"remote-{os.urandom(6).hex()}/"
    a = start_edge(tmp_path / "a", "edge-a")
    b = start_edge(
        tmp_path / "b",
        "edge-b",
        EDGE_STORAGE_BACKEND="s3",
        EDGE_STORAGE_ENDPOINT_URL=s3_server["endpoint_url"],
        EDGE_STORAGE_BUCKET=s3_server["bucket"],
        EDGE_STORAGE_PREFIX=prefix,
        EDGE_STORAGE_REGION=s3_server["region"],
        EDGE_STORAGE_ACCESS_KEY_ID=s3_server["access_key_id"],
        EDGE_STORAGE_SECRET_ACCESS_KEY=s3_server["secret_access_key"],
        EDGE_STORAGE_REDIRECT_DOWNLOADS="false",
    )
    relay = Relay(a.url)
    server = ThreadedServer(relay_app(relay)).start()
    try:
        add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads")
        yield a, b, relay, prefix
    finally:
        server.stop()
        for edge in (b, a):
            assert edge.stop() == 0, edge.log_tail()


def test_an_s3_edge_fetches_a_miss_once_keeps_it_in_the_bucket_and_serves_ranges(s3_pair, s3_server) -> None:
    a, b, relay, prefix = s3_pair
    upload(a, "app/big.bin", DATA)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(b, "remote/app/big.bin"), range(8)))

    assert {(status, body == DATA) for status, body, _ in answers} == {(200, True)}
    assert relay.downloads_of("app/big.bin") == 1
    assert any(key.endswith(hashlib.sha256(DATA).hexdigest()) for key in _objects(s3_server, prefix))
    status, body, _ = get(b, "remote/app/big.bin", {"Range": "bytes=1000-1999"})
    assert (status, body) == (206, DATA[1000:2000])


def test_an_s3_edge_keeps_nothing_of_a_tampered_download(s3_pair, s3_server) -> None:
    a, b, relay, prefix = s3_pair
    upload(a, "app/big.bin", DATA)
    relay.flip = True

    with pytest.raises(CUT_SHORT):
        get(b, "remote/app/big.bin")

    assert not cached(b, "remote/app/big.bin")
    assert _objects(s3_server, prefix) == []  # neither the flipped bytes nor a multipart upload's parts
