"""A blob upload to an S3 edge outlives the process that received its first bytes: real edge
processes (``edge serve --workers 2``: two processes sharing one database and one bucket), a
real SeaweedFS, and a worker killed with -9 in the middle of an upload."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from devstack.replicas import s3_environment
from devstack.services import EdgeProcess
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import KEYS, REPO, TX, Remote, manifest_of, sha256, signed, tx_id
from tests.test_edge_workers import WORKER, on_worker, wait_until

MiB = 1024 * 1024
PART = 8 * MiB  # the edge's S3 part size: what a staged chunk holds


@pytest.fixture
def prefix() -> str:
    return f"staging-e2e-{os.urandom(6).hex()}/"


@pytest.fixture
def bucket(s3_server: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        region_name=s3_server["region"],
        aws_access_key_id=s3_server["access_key_id"],
        aws_secret_access_key=s3_server["secret_access_key"],
    )


@pytest.fixture
def edge(s3_server: dict[str, str], prefix: str, tmp_path: Path) -> Iterator[EdgeProcess]:
    """Two workers of an edge storing its blobs under a fresh prefix of the shared bucket."""
    process = EdgeProcess(tmp_path / "edge", workers=2, env=s3_environment(s3_server, prefix)).start()
    try:
        yield process
    finally:
        code = process.stop()
        print(f"edge log, last lines:\n{process.log_tail()}")
    assert code == 0, process.log_tail()


def worker_pid(edge: EdgeProcess, number: int) -> int:
    """The pid of worker ``number``, from the supervisor's log line of its start."""
    for line in reversed(edge.log_path.read_text().splitlines()):
        with_fields = line.startswith("{") and json.loads(line)
        if with_fields and with_fields.get("message") == f"worker {number} started":
            return int(with_fields["pid"])
        found = re.search(rf"worker {number} started.*pid\D*(\d+)", line)
        if found:
            return int(found.group(1))
    pytest.fail(f"no start of worker {number} in the log")


def connection_to_a_worker(edge: EdgeProcess) -> tuple[socket.socket, int]:
    """A kept-alive connection, and the number of the worker that holds it."""
    sock = socket.create_connection(("127.0.0.1", edge.port or 0), timeout=60)
    sock.sendall(b"GET /artifactory/api/system/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while not head.endswith(b"OK"):
        head += sock.recv(65536)
    found = re.search(rf"{WORKER}: (\d+)".encode(), head)
    assert found, head
    return sock, int(found.group(1))


def recorded_chunks(edge: EdgeProcess, tid: str) -> int:
    """Chunks of the transaction the edge has recorded in its database."""
    with sqlite3.connect(f"file:{edge.data_dir / 'catalog.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM staged_chunks WHERE transaction_id = ?", (tid,)).fetchone()[0])


def staged_keys(bucket: Any, name: str, prefix: str) -> list[str]:
    listed = bucket.list_objects_v2(Bucket=name, Prefix=f"{prefix}staging/")
    return [obj["Key"] for obj in listed.get("Contents", [])]


def started(edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory, files: dict[str, bytes]) -> tuple[Remote, str]:
    """The Distribution service's side, with a transaction of ``files`` started on ``edge``."""
    body = signed(key_factory, keys.alice, manifest_of(files))
    remote = Remote(edge)
    assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
    assert remote.call("POST", TX, json=body).status_code == 201
    return remote, tx_id(body)


def send_part_of(sock: socket.socket, remote: Remote, url: str, blob: bytes, count: int) -> None:
    """The head of a PUT of all of ``blob`` and its first ``count`` bytes, on ``sock``."""
    head = f"PUT {url} HTTP/1.1\r\nHost: x\r\nAuthorization: {remote.session.headers['Authorization']}\r\n"
    sock.sendall(f"{head}Content-Length: {len(blob)}\r\n\r\n".encode() + blob[:count])


def cut_off(edge: EdgeProcess, remote: Remote, url: str, blob: bytes, count: int) -> None:
    """A PUT of ``blob`` whose connection drops after ``count`` bytes; returns once the edge holds them."""
    with socket.create_connection(("127.0.0.1", edge.port or 0), timeout=60) as sock:
        send_part_of(sock, remote, url, blob, count)
    wait_until(lambda: remote.call("HEAD", url).headers["X-Received-Bytes"] == str(count))


def test_a_blob_half_received_by_a_worker_killed_9_is_finished_by_the_other_and_serves_its_sha256(
    edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory, bucket: Any, s3_server: dict[str, str], prefix: str
) -> None:
    big = os.urandom(2 * PART + 3 * MiB)
    remote, tid = started(edge, keys, key_factory, {"big.bin": big, "small.txt": b"small"})
    url = f"{TX}/{tid}/blobs/{sha256(big)}"
    sock, first = connection_to_a_worker(edge)
    with sock:
        send_part_of(sock, remote, url, big, PART + 2 * MiB)
        wait_until(lambda: recorded_chunks(edge, tid) == 1)
        os.kill(worker_pid(edge, first), signal.SIGKILL)
        wait_until(lambda: sock.recv(65536) == b"")
    wait_until(lambda: edge.log_path.read_text().count(f"edge node worker {first} ready") == 2)  # restarted

    other = on_worker(edge, 3 - first)
    other.headers.update(remote.session.headers)
    held = other.head(f"{edge.url}{url}", timeout=60)
    assert (held.status_code, held.headers[WORKER]) == (200, str(3 - first))
    assert held.headers["X-Received-Bytes"] == str(PART), "the chunk the killed worker stored and recorded"
    assert not list((edge.data_dir / "staging").glob(f"{tid}/*")), "nothing of it on the local disk"
    rest = other.put(
        f"{edge.url}{url}",
        data=big[PART:],
        headers={"Content-Range": f"bytes {PART}-{len(big) - 1}/{len(big)}"},
        timeout=60,
    )
    assert rest.status_code == 201, rest.text
    assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(b'small')}", data=b"small").status_code == 201
    assert requests.get(f"{edge.artifactory_url}/{REPO}/app/1.0.0/big.bin", timeout=60).status_code == 404
    committed = remote.call("POST", f"{TX}/{tid}/commit")
    assert committed.status_code == 200 and committed.json()["state"] == "COMMITTED", committed.text
    got = requests.get(f"{edge.artifactory_url}/{REPO}/app/1.0.0/big.bin", timeout=60)
    assert got.status_code == 200 and sha256(got.content) == sha256(big)
    assert staged_keys(bucket, s3_server["bucket"], prefix) == [], "no staged chunk is left in the bucket"
    assert recorded_chunks(edge, tid) == 0


def test_a_resumed_blob_whose_bytes_do_not_match_is_refused_as_on_local_disk_and_nothing_is_kept(
    edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory, bucket: Any, s3_server: dict[str, str], prefix: str
) -> None:
    big = os.urandom(PART + MiB)
    remote, tid = started(edge, keys, key_factory, {"big.bin": big})
    url = f"{TX}/{tid}/blobs/{sha256(big)}"
    held = PART + 1000
    cut_off(edge, remote, url, big, held)  # what arrived before the connection dropped is kept
    wrong = os.urandom(len(big) - held)
    refused = remote.call("PUT", url, data=wrong, headers={"Content-Range": f"bytes {held}-{len(big) - 1}/{len(big)}"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["message"].startswith(f"Blob {sha256(big)} of {len(big)} bytes refused")
    assert remote.call("HEAD", url).headers["X-Received-Bytes"] == "0"
    assert staged_keys(bucket, s3_server["bucket"], prefix) == []
    assert remote.call("GET", f"{TX}/{tid}").json()["missing"] == [sha256(big)]


def test_an_abort_deletes_the_chunks_staged_in_the_bucket_and_their_record(
    edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory, bucket: Any, s3_server: dict[str, str], prefix: str
) -> None:
    big = os.urandom(PART + MiB)
    remote, tid = started(edge, keys, key_factory, {"big.bin": big})
    url = f"{TX}/{tid}/blobs/{sha256(big)}"
    cut_off(edge, remote, url, big, PART)
    assert staged_keys(bucket, s3_server["bucket"], prefix) != []
    aborted = remote.call("POST", f"{TX}/{tid}/abort")
    assert aborted.status_code == 200 and aborted.json()["state"] == "ABORTED"
    assert staged_keys(bucket, s3_server["bucket"], prefix) == []
    assert recorded_chunks(edge, tid) == 0
