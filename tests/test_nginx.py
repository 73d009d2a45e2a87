"""A real nginx running the shipped ``nginx/edge.conf`` in front of a real edge.

The edge runs with ``accel_redirect = "/_blobs/"`` and trusts 127.0.0.1 (where nginx
connects from); clients connect to nginx from 127.0.0.1 or 127.0.0.2. What an operator
relies on: nginx sends the bytes of local blobs (the edge's audit shows it sent none) with
every header the edge answers, Range and conditional requests answer as the edge does,
the internal blob location cannot be reached from outside, the edge sees the client's
address and not nginx's nor a spoofed one, and uploads and distribution transactions
stream through without being buffered.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from devstack.nginx import SHIPPED_CONF, STATIC_PREFIX, NginxError, NginxProcess, find_nginx
from devstack.services import EdgeProcess
from edge.settings import load_edge_settings
from repository.settings import SettingsError
from tests.access_http import TX, Answer, call, push_bundle, sha256
from tests.gpg_keys import KeyFactory

UPLOADS = "artifactory-edge-uploads"
RELEASES = "releases-local"  # where bundles land: never the uploads repo
PREFIX = "/_blobs/"
PROXY = "127.0.0.1"  # nginx, the edge's one trusted proxy
CLIENT = "127.0.0.2"  # a client on another loopback address
MiB = 1024 * 1024
WAIT = 30.0  # a hang guard, not a speed check
# Headers every connection has its own of; everything else the edge answers must arrive.
PER_CONNECTION = {"date", "server", "connection", "keep-alive", "x-request-id"}

BIG = os.urandom(300_000)  # above the in-memory size: the edge would use sendfile
FILES = {
    "rel/app.bin": BIG,
    "rel/notes.txt": b"release notes\n" * 40,  # small: the edge would answer from memory
    "rel/empty.bin": b"",
    "rel/caf\u00e9 & co.tar.gz": os.urandom(5000),  # a name that needs quoting in headers and URLs
}


@dataclass
class Front:
    edge: EdgeProcess
    nginx: NginxProcess

    def via(self, path: str, method: str = "GET", **kwargs: Any) -> Answer:
        return call(self.nginx.url + path, method, **kwargs)

    def direct(self, path: str, method: str = "GET", **kwargs: Any) -> Answer:
        return call(self.edge.url + path, method, **kwargs)

    @property
    def admin(self) -> str:
        return self.edge.admin_token


def artifact(name: str) -> str:
    return f"/artifactory/{UPLOADS}/{quote(name)}"


def shard(data: bytes) -> str:
    digest = sha256(data)
    return f"{digest[:2]}/{digest}"


def deploy(front: Front, name: str, data: bytes) -> None:
    sent = front.direct(artifact(name), "PUT", body=data, token=front.admin)
    assert sent.status == 201, sent.body


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)
    return found


def audit_records(front: Front, path: str, action: str = "download") -> list[dict[str, Any]]:
    query = f"repo={UPLOADS}&path={quote(path)}&action={action}"
    answer = front.direct(f"/artifactory/api/audit?{query}", token=front.admin)
    assert answer.status == 200, answer.body
    return list(answer.json()["records"])


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    try:
        find_nginx()
    except NginxError as exc:
        pytest.fail(str(exc))
    base = tmp_path_factory.mktemp("nginx-front")
    env = {
        "EDGE_ACCEL_REDIRECT": PREFIX,
        "EDGE_ACCESS_TRUSTED_PROXIES": f"{PROXY}/32",
        "EDGE_AUDIT_FLUSH_INTERVAL": "0.05",
    }
    edge = EdgeProcess(base / "edge", env=env).start()
    nginx = NginxProcess(base / "nginx", [edge.port or 0], edge.data_dir / "blobs" / "blobs")
    try:
        nginx.start()
        site = Front(edge, nginx)
        for name, data in FILES.items():
            deploy(site, name, data)
        yield site
    finally:
        nginx.stop()
        code = edge.stop()
        print(f"nginx error log:\n{nginx.error_log_text()[-3000:]}\nedge log:\n{edge.log_tail()}")
    assert code == 0, edge.log_tail()


# -- the shipped file -------------------------------------------------------------------


def test_the_shipped_server_block_listens_on_80_and_balances_over_the_compose_edges() -> None:
    text = SHIPPED_CONF.read_text()
    assert "    listen 80;\n" in text
    assert "    server edge-1:8082;\n    server edge-2:8082;\n" in text
    assert "location /_blobs/ {\n        internal;\n" in text


@pytest.mark.parametrize(
    "value", ["/_blobs", "_blobs/", "/", "/../", "/a/../", "/a b/", "/_blobs/?x/", "//", "http://x/"]
)
def test_accel_redirect_must_be_empty_or_a_location_prefix(value: str) -> None:
    with pytest.raises(SettingsError, match="accel_redirect"):
        load_edge_settings(env={"EDGE_ACCEL_REDIRECT": value})


def test_accel_redirect_is_off_by_default_and_read_from_the_environment() -> None:
    assert load_edge_settings(env={}).accel_redirect == ""
    assert load_edge_settings(env={"EDGE_ACCEL_REDIRECT": "/internal/blobs/"}).accel_redirect == "/internal/blobs/"


# -- downloads ----------------------------------------------------------------------------


def headers_of(answer: Answer) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in answer.headers.items():
        found.setdefault(name.lower(), []).append(value)
    return found


def assert_same_headers(via: Answer, direct: Answer) -> None:
    """Every header the edge answers arrives through nginx once, with the same value."""
    theirs, ours = headers_of(via), headers_of(direct)
    assert {k: v for k, v in theirs.items() if k not in PER_CONNECTION} == {
        k: v for k, v in ours.items() if k not in PER_CONNECTION
    }
    assert len(theirs["x-request-id"]) == 1


def test_a_benchmark_s_static_dir_is_served_by_the_same_nginx_beside_the_edge(front: Front, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "floor.bin").write_bytes(BIG)
    blob_dir = front.edge.data_dir / "blobs" / "blobs"
    with NginxProcess(tmp_path / "nginx", [front.edge.port or 0], blob_dir, static_dir=www) as nginx:
        static = call(nginx.url + STATIC_PREFIX + "floor.bin")
        assert (static.status, static.body) == (200, BIG)
        assert "X-Checksum-Sha256" not in static.headers  # nginx's own answer, no edge behind it
        via = call(nginx.url + artifact("rel/notes.txt"))
        assert (via.status, via.body) == (200, FILES["rel/notes.txt"])
    # the shipped config alone has no such location: the edge answers it, with its own JSON 404
    plain = front.via(STATIC_PREFIX + "floor.bin")
    assert (plain.status, plain.error) == (404, "Not Found")


@pytest.mark.parametrize("name", list(FILES))
def test_a_download_through_nginx_has_the_bytes_and_every_header_the_edge_answers(front: Front, name: str) -> None:
    direct, via = front.direct(artifact(name)), front.via(artifact(name))
    assert (via.status, via.body) == (direct.status, direct.body) == (200, FILES[name])
    assert_same_headers(via, direct)
    assert via.headers["X-Checksum-Sha256"] == sha256(FILES[name])
    assert via.headers["ETag"] == f'"{sha256(FILES[name])}"'
    assert "X-Accel-Redirect" not in via.headers


@pytest.mark.parametrize("name", ["rel/app.bin", "rel/empty.bin"])
def test_head_through_nginx_answers_the_edge_s_headers_without_a_body(front: Front, name: str) -> None:
    direct, via = front.direct(artifact(name), "HEAD"), front.via(artifact(name), "HEAD")
    assert (via.status, via.body) == (direct.status, direct.body) == (200, b"")
    assert_same_headers(via, direct)
    assert via.headers["Content-Length"] == str(len(FILES[name]))


def test_nginx_sends_the_bytes_and_the_edge_records_the_download_with_none_sent(front: Front) -> None:
    data = os.urandom(100_000)
    deploy(front, "audit/nginx.bin", data)
    assert front.via(artifact("audit/nginx.bin"), source=CLIENT).body == data
    (record,) = wait_for("the download record", lambda: audit_records(front, "audit/nginx.bin"))
    assert (record["action"], record["status"], record["bytes"], record["aborted"]) == ("download", 200, 0, False)
    assert record["clientIp"] == CLIENT
    stats = front.via(f"/artifactory/api/storage/{UPLOADS}/audit/nginx.bin?stats").json()
    assert stats["downloadCount"] == 1


def test_the_edge_answers_x_accel_redirect_only_when_the_nginx_in_front_asks(front: Front) -> None:
    path, asks = artifact("rel/app.bin"), {"X-Sendfile-Type": "X-Accel-Redirect"}
    plain = front.direct(path)
    assert plain.body == BIG and "X-Accel-Redirect" not in plain.headers
    redirected = front.direct(path, headers=asks)
    assert (redirected.status, redirected.body) == (200, b"")
    assert redirected.headers["X-Accel-Redirect"] == PREFIX + shard(BIG)
    assert redirected.headers["X-Checksum-Sha256"] == sha256(BIG)
    ranged = front.direct(path, headers={**asks, "Range": "bytes=10-19"})
    assert (ranged.status, ranged.headers["Content-Range"], ranged.body) == (206, "bytes 10-19/300000", b"")
    # conditions nginx would judge again on the blob file: the edge sends the bytes itself
    conditional = front.direct(path, headers={**asks, "If-Match": f'"{sha256(BIG)}"'})
    assert conditional.body == BIG and "X-Accel-Redirect" not in conditional.headers
    head = front.direct(path, "HEAD", headers=asks)
    assert head.status == 200 and "X-Accel-Redirect" not in head.headers


SIZE = len(BIG)
RANGES = [
    ("bytes=0-9", 206, 0, 10),
    ("bytes=1000-1999", 206, 1000, 1000),
    ("bytes=-500", 206, SIZE - 500, 500),
    ("bytes=299990-", 206, 299990, 10),
    ("bytes=299990-400000", 206, 299990, 10),
    ("bytes=-400000", 206, 0, SIZE),
    # past 64 bits nginx itself would answer 416: the edge sends these bytes, as RFC 9110 reads them
    ("bytes=299990-99999999999999999999999999", 206, 299990, 10),
    ("bytes=-99999999999999999999999999", 206, 0, SIZE),
    ("bytes=300000-", 416, 0, 0),
    ("bytes=" + "\u0661-\u0662".encode().decode("latin-1"), 416, 0, 0),  # UTF-8 on the wire
    ("bytes=5-1", 416, 0, 0),
    ("bytes=abc", 416, 0, 0),
    ("bytes=0-5,10-20", 416, 0, 0),
]


@pytest.mark.parametrize(("header", "status", "start", "length"), RANGES)
def test_a_range_through_nginx_answers_as_the_edge_with_the_right_bytes(
    front: Front, header: str, status: int, start: int, length: int
) -> None:
    direct = front.direct(artifact("rel/app.bin"), headers={"Range": header})
    via = front.via(artifact("rel/app.bin"), headers={"Range": header})
    assert via.status == direct.status == status
    assert_same_headers(via, direct)
    if status == 206:
        assert via.body == direct.body == BIG[start : start + length]
        assert via.headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{SIZE}"
        assert via.headers["X-Checksum-Sha256"] == sha256(BIG) and via.headers["ETag"] == f'"{sha256(BIG)}"'
        assert via.headers["Content-Disposition"] == direct.headers["Content-Disposition"]
    else:
        assert via.headers["Content-Range"] == f"bytes */{SIZE}"
        assert via.error == direct.error == "Requested range not satisfiable"


def test_if_range_through_nginx_is_judged_on_the_edge_s_etag_and_last_modified(front: Front) -> None:
    path = artifact("rel/app.bin")
    last_modified = front.direct(path, "HEAD").headers["Last-Modified"]
    cases = {
        f'"{sha256(BIG)}"': 206,
        '"0123"': 200,
        f'W/"{sha256(BIG)}"': 200,
        last_modified: 206,
        "Mon, 01 Jan 2024 00:00:00 GMT": 200,
    }
    for if_range, status in cases.items():
        headers = {"Range": "bytes=100-199", "If-Range": if_range}
        direct, via = front.direct(path, headers=headers), front.via(path, headers=headers)
        assert via.status == direct.status == status, if_range
        assert_same_headers(via, direct)
        assert via.body == direct.body == (BIG[100:200] if status == 206 else BIG), if_range


def test_conditional_requests_through_nginx_answer_as_the_edge(front: Front) -> None:
    path = artifact("rel/app.bin")
    etag = f'"{sha256(BIG)}"'
    last_modified = front.direct(path, "HEAD").headers["Last-Modified"]
    cases = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": last_modified}, 304),
        ({"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 200),
        ({"If-Match": etag}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 412),
        ({"If-Match": etag, "Range": "bytes=0-99"}, 206),
    ]
    for headers, status in cases:
        direct, via = front.direct(path, headers=headers), front.via(path, headers=headers)
        assert via.status == direct.status == status, headers
        assert via.body == direct.body, headers
        assert_same_headers(via, direct)
        if status == 200:
            assert via.body == BIG and via.headers["X-Checksum-Sha256"] == sha256(BIG)
        if status == 304:
            assert via.headers["ETag"] == etag


def test_the_internal_blob_location_cannot_be_reached_from_outside(front: Front) -> None:
    blob = shard(BIG)
    name = sha256(BIG)
    tries = [
        f"/_blobs/{blob}",
        "/_blobs/",
        f"/_blobs/../_blobs/{blob}",
        f"/artifactory/../_blobs/{blob}",
        f"/artifactory/%2e%2e/_blobs/{blob}",
        f"/artifactory/{UPLOADS}/..%2f..%2f_blobs/{blob}",
        f"/%5Fblobs/{blob}",
        f"/_blobs%2F{blob.replace('/', '%2F')}",
        f"//_blobs/{blob}",
        f"/./_blobs/./{blob}",
        f"/_blobs/{name[:2]}/x/../{name}",
        f"/_BLOBS/{blob}",
    ]
    for raw in tries:
        for method in ("GET", "HEAD"):
            answer = front.via(raw, method, headers={"X-Accel-Redirect": f"/_blobs/{blob}"})
            assert answer.status in (400, 404), (raw, method, answer.status)
            assert BIG[:64] not in answer.body, raw
    missing = front.via(f"/_blobs/{blob}")
    assert (missing.status, missing.error) == (404, "Unable to find item")


# -- the client's address ----------------------------------------------------------------


def test_the_edge_sees_the_client_s_address_through_nginx_and_a_spoofed_header_loses(front: Front) -> None:
    data = os.urandom(1000)
    deploy(front, "where/from.bin", data)
    spoofed = {"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}
    assert front.via(artifact("where/from.bin"), source=CLIENT, headers=spoofed).body == data
    assert front.via(artifact("where/from.bin"), source=PROXY).body == data
    records = wait_for("two download records", lambda: len(r := audit_records(front, "where/from.bin")) == 2 and r)
    assert sorted(r["clientIp"] for r in records) == [PROXY, CLIENT]


def test_ip_rules_judge_the_client_behind_nginx_not_nginx_itself(front: Front) -> None:
    rules = {"rules": [{"repos": [UPLOADS], "deny_cidrs": [f"{CLIENT}/32"]}]}
    put = front.direct("/artifactory/api/access/rules", "PUT", body=rules, token=front.admin)
    assert put.status == 200, put.body
    path = artifact("rel/notes.txt")
    try:
        refused = front.via(path, source=CLIENT)
        assert (refused.status, refused.error) == (403, "Access from your network address is not allowed")
        for claim in ("127.0.0.1", "203.0.113.9", "127.0.0.1, 127.0.0.1"):
            assert front.via(path, source=CLIENT, headers={"X-Forwarded-For": claim}).status == 403, claim
        assert front.via(path, source=PROXY).body == FILES["rel/notes.txt"]
    finally:
        assert front.direct("/artifactory/api/access/rules", "DELETE", token=front.admin).status in (200, 204)
    assert front.via(path, source=CLIENT).status == 200


# -- uploads and transactions --------------------------------------------------------------


def put_through(
    front: Front, path: str, body: Any, headers: dict[str, str], *, source: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", front.nginx.port, timeout=120, source_address=(source, 0) if source else None, blocksize=MiB
    )
    try:
        conn.request("PUT", path, body=body, headers={"Authorization": f"Bearer {front.admin}", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def download_digest(front: Front, path: str) -> tuple[int, int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", front.nginx.port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        digest, size = hashlib.sha256(), 0
        while chunk := response.read(MiB):
            digest.update(chunk)
            size += len(chunk)
        return response.status, size, digest.hexdigest()
    finally:
        conn.close()


def assert_nothing_buffered_to_disk(front: Front) -> None:
    log = front.nginx.error_log_text()
    assert "buffered to a temporary file" not in log, log[-2000:]


def test_a_large_deploy_streams_through_nginx_and_comes_back_whole(front: Front, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    block, digest = bytearray(os.urandom(MiB)), hashlib.sha256()
    with source.open("wb") as out:
        for index in range(40):
            block[:8] = index.to_bytes(8, "little")
            digest.update(block)
            out.write(block)
    path = artifact("large/large.bin")
    with source.open("rb") as body:
        headers = {"Content-Length": str(40 * MiB), "X-Checksum-Sha256": digest.hexdigest()}
        status, answer = put_through(front, path, body, headers, source=CLIENT)
    assert status == 201, answer
    assert json.loads(answer)["checksums"]["sha256"] == digest.hexdigest()
    assert download_digest(front, path) == (200, 40 * MiB, digest.hexdigest())
    assert_nothing_buffered_to_disk(front)


def test_a_chunked_upload_passes_through_nginx(front: Front) -> None:
    parts = [os.urandom(256 * 1024) for _ in range(12)]
    data = b"".join(parts)
    path = artifact("chunked/upload.bin")
    status, answer = put_through(front, path, iter(parts), {"X-Checksum-Sha256": sha256(data)})
    assert status == 201, answer
    assert front.via(path).body == data
    (record,) = wait_for("the deploy record", lambda: audit_records(front, "chunked/upload.bin", "deploy"))
    assert record["status"] == 201
    assert_nothing_buffered_to_disk(front)


class ThroughNginx:
    """What ``push_bundle`` needs of an edge, with nginx's URL: the Distribution service's view."""

    def __init__(self, front: Front) -> None:
        self.url = front.nginx.url
        self.admin_token = front.admin


def test_a_distribution_transaction_runs_through_nginx(front: Front, key_factory: KeyFactory) -> None:
    files = {f"{RELEASES}/bundle/1.0/app.tar.gz": os.urandom(2 * MiB), f"{RELEASES}/bundle/1.0/README": b"hi\n"}
    key = key_factory.make_key("Release Manager <release@example.com>")
    push_bundle(ThroughNginx(front), key_factory, key, "bundle", "1.0", files)  # type: ignore[arg-type]
    for target, data in files.items():
        answer = front.via(f"/artifactory/{target}")
        assert (answer.status, answer.body) == (200, data)


def test_a_blob_upload_reaches_the_edge_while_the_sender_is_still_sending(
    front: Front, key_factory: KeyFactory
) -> None:
    """No request buffering: the edge has staged bytes before nginx has the whole body."""
    from wire.manifest import Manifest, ManifestArtifact, encode

    data = os.urandom(8 * MiB)
    target = f"{RELEASES}/stream/1.0/big.bin"
    manifest = Manifest.create(
        "stream",
        "1.0",
        [
            ManifestArtifact(
                target=target,
                source=f"src/{target}",
                size=len(data),
                sha256=sha256(data),
                sha1=hashlib.sha1(data).hexdigest(),
                md5=hashlib.md5(data).hexdigest(),
            )
        ],
        created_by="release-manager",
    )
    key = key_factory.make_key("Stream Signer <stream@example.com>")
    trusted = front.via(
        "/artifactory/api/security/keys/trusted",
        "POST",
        body={"alias": "stream", "public_key": key.public},
        token=front.admin,
    )
    assert trusted.status in (200, 201), trusted.body
    body = encode(manifest)
    signature = key_factory.sign(key, body).decode()
    started = front.via(TX, "POST", body={"manifest": body.decode(), "signature": signature}, token=front.admin)
    assert started.status == 201, started.body
    tx = started.json()["transaction_id"]
    staged = front.edge.data_dir / "staging" / tx / f"{sha256(data)}.part"

    conn = http.client.HTTPConnection("127.0.0.1", front.nginx.port, timeout=120)
    try:
        conn.putrequest("PUT", f"{TX}/{tx}/blobs/{sha256(data)}")
        conn.putheader("Authorization", f"Bearer {front.admin}")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        half = len(data) // 2
        conn.send(data[:half])
        wait_for("staged bytes on the edge", lambda: staged.exists() and staged.stat().st_size > 0)
        conn.send(data[half:])
        response = conn.getresponse()
        assert response.status == 201, response.read()
        response.read()
    finally:
        conn.close()
    committed = front.via(f"{TX}/{tx}/commit", "POST", token=front.admin)
    assert committed.status == 200, committed.body
    assert download_digest(front, f"/artifactory/{target}") == (200, len(data), sha256(data))
    assert_nothing_buffered_to_disk(front)
