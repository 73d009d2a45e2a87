"""Connections that never finish, and requests that cannot be parsed, against real processes.

A real ``edge serve`` and a real ``distribution serve``, each started with read limits of a
second, are sent raw bytes over sockets: half a request line, half the headers, nothing at
all, a body that stops, an idle keep-alive, and a crowd of such sockets. Each must be closed
by the server; the waits below are generous hang guards, not speed requirements. Requests
too big to parse get a JSON 4xx in the service's shape that does not quote the request.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess

LIMIT = "1"  # seconds, for every read limit of both services
# How long a test waits for the server to close a socket before calling it a hang.
HANG_GUARD = 30.0
MARKER = "zq-request-bytes-zq"  # sent in oversized requests; never to be quoted back
MAX_TARGET = MAX_FIELD = 8190
MAX_HEADERS = 128
PING = "/artifactory/api/system/ping"
UPLOADS = "artifactory-edge-uploads"


def _stopped(service: EdgeProcess) -> None:
    code = service.stop()
    print(f"{service.program} log, last lines:\n{service.log_tail()}")
    assert code == 0, f"{service.program} exited with {code} on SIGTERM"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    limits = {f"EDGE_{k}": LIMIT for k in ("HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEPALIVE_TIMEOUT")}
    service = EdgeProcess(tmp_path_factory.mktemp("edge"), env=limits).start()
    yield service
    _stopped(service)


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionProcess]:
    limits = {f"DISTRIBUTION_{k}": LIMIT for k in ("HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEPALIVE_TIMEOUT")}
    service = DistributionProcess(tmp_path_factory.mktemp("distribution"), env=limits)
    service.start()
    yield service
    _stopped(service)


@pytest.fixture(params=["edge", "distribution"])
def service(request: pytest.FixtureRequest) -> EdgeProcess:
    return request.getfixturevalue(request.param)


def connect(service: EdgeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=HANG_GUARD)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails the test)."""
    received = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {HANG_GUARD} s; got {received[:200]!r}")
        except ConnectionResetError:
            pass
    return received


def request_bytes(target: str, headers: dict[str, str] | None = None, *, close: bool = True) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def exchange(service: EdgeProcess, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    sock = connect(service)
    sock.sendall(raw)
    return answer(read_until_closed(sock))


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /artifactory/api/sys", b"GET /artifactory/api/system/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: "],
    ids=["nothing", "half a request line", "half the headers"],
)
def test_a_connection_that_never_finishes_its_request_head_is_closed_unanswered(
    service: EdgeProcess, sent: bytes
) -> None:
    sock = connect(service)
    sock.sendall(sent)
    assert read_until_closed(sock) == b""


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(service: EdgeProcess) -> None:
    sock = connect(service)
    sock.sendall(request_bytes(PING, close=False))
    status, headers, body = answer(read_until_closed(sock))
    assert (status, body) == (200, b"OK")
    assert headers.get("connection", "keep-alive").lower() != "close"  # kept open, then closed as idle


def test_a_head_trickled_a_byte_at_a_time_is_cut_off_by_its_deadline_not_by_each_byte(edge: EdgeProcess) -> None:
    sock = connect(edge)
    request = request_bytes(PING)
    sent = 0
    try:
        for byte in request[:-2]:  # never the last CRLF
            sock.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert read_until_closed(sock) == b""
    # at 20 bytes a second the head takes longer than its limit: each byte arriving did not
    # renew it, so the server closed the socket before the head was all sent
    assert sent < len(request) - 2, f"all {sent} bytes of the head were taken in"


def _stalled_put(service: EdgeProcess, target: str, content_type: str = "application/octet-stream") -> bytes:
    head = (
        f"{'POST' if 'release_bundle' in target else 'PUT'} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {service.admin_token}\r\nContent-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n"
    )
    sock = connect(service)
    sock.sendall(head.encode() + b'{"name": "stalled", "vers')  # 25 of 1000 bytes, then nothing
    return read_until_closed(sock)


def test_a_body_that_stops_arriving_is_answered_408_and_nothing_is_stored(edge: EdgeProcess) -> None:
    target = f"/artifactory/{UPLOADS}/stalled/file.bin"
    status, headers, body = answer(_stalled_put(edge, target))
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    (error,) = json.loads(body)["errors"]
    assert error["status"] == 408 and "stopped arriving" in error["message"]
    assert exchange(edge, request_bytes(target))[0] == 404


def test_the_distribution_service_answers_a_stalled_body_408_in_each_api_s_shape(
    distribution: DistributionProcess,
) -> None:
    target = f"/artifactory/{SOURCE_REPO}/stalled/file.bin"
    status, _, body = answer(_stalled_put(distribution, target))
    assert (status, json.loads(body)["errors"][0]["status"]) == (408, 408)
    auth = {"Authorization": f"Bearer {distribution.admin_token}"}
    assert exchange(distribution, request_bytes(target, auth))[0] == 404
    status, _, body = answer(_stalled_put(distribution, "/distribution/api/v1/release_bundle", "application/json"))
    assert status == 408
    assert json.loads(body)["status_code"] == 408
    listed = exchange(distribution, request_bytes("/distribution/api/v1/release_bundle", auth))
    assert (listed[0], json.loads(listed[2])) == (200, [])


def test_two_hundred_stalled_connections_do_not_stop_a_client_and_are_all_closed(service: EdgeProcess) -> None:
    stalled = []
    for i in range(200):
        sock = connect(service)
        sock.sendall([b"GET /artifac", b"GET / HTTP/1.1\r\nHost: x\r\n", b""][i % 3])
        stalled.append(sock)
    try:
        assert exchange(service, request_bytes(PING))[0] == 200  # served while the 200 hang
        selector = selectors.DefaultSelector()
        for sock in stalled:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = set(stalled)
        deadline = time.monotonic() + HANG_GUARD
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"a stalled connection was answered: {data[:100]!r}"
                selector.unregister(sock)
                open_.discard(sock)  # type: ignore[arg-type]
        assert not open_, f"{len(open_)} of 200 stalled connections still open after {HANG_GUARD} s"
    finally:
        for sock in stalled:
            sock.close()


# ------------------------------------------------------------ requests too big to parse


def _target(prefix: str, length: int) -> str:
    return prefix + "?pad=" + "x" * (length - len(prefix) - 5)


@pytest.mark.parametrize(("length", "status"), [(MAX_TARGET - 1, 200), (MAX_TARGET, 200), (MAX_TARGET + 1, 414)])
def test_a_request_target_may_have_up_to_the_limit_of_bytes(edge: EdgeProcess, length: int, status: int) -> None:
    assert exchange(edge, request_bytes(_target(PING, length)))[0] == status


@pytest.mark.parametrize(
    ("size", "status"), [(0, 200), (1, 200), (MAX_FIELD - 1, 200), (MAX_FIELD, 200), (MAX_FIELD + 1, 431)]
)
def test_a_header_value_may_have_up_to_the_limit_of_bytes(edge: EdgeProcess, size: int, status: int) -> None:
    assert exchange(edge, request_bytes(PING, {"X-Pad": "v" * size}))[0] == status


@pytest.mark.parametrize(
    ("count", "status"), [(0, 200), (1, 200), (MAX_HEADERS - 1, 200), (MAX_HEADERS, 200), (MAX_HEADERS + 1, 431)]
)
def test_a_request_may_have_up_to_the_limit_of_headers(edge: EdgeProcess, count: int, status: int) -> None:
    if count < 2:  # HTTP/1.0, which needs no Host header
        host = "Host: x\r\n" if count else ""
        raw = f"GET {PING} HTTP/1.0\r\n{host}\r\n".encode()
    else:  # Host and Connection are two of them
        raw = request_bytes(PING, {f"X-H{i}": "1" for i in range(count - 2)})
    assert exchange(edge, raw)[0] == status


OVERSIZED = {
    "a request target": lambda prefix: request_bytes(_target(prefix + MARKER, MAX_TARGET + 100)),
    "a header": lambda prefix: request_bytes(prefix, {"X-Big": MARKER * 1000}),
    "too many headers": lambda prefix: request_bytes(prefix, {f"X-{MARKER}-{i}": MARKER for i in range(200)}),
}


@pytest.mark.parametrize("what", OVERSIZED)
@pytest.mark.parametrize(
    ("service_name", "prefix"),
    [
        ("edge", "/artifactory/api/system/ping"),
        ("distribution", "/artifactory/api/system/ping"),
        ("distribution", "/distribution/api/v1/release_bundle"),
    ],
)
def test_an_oversized_request_is_a_json_4xx_in_the_api_s_shape_that_does_not_quote_it(
    request: pytest.FixtureRequest, service_name: str, prefix: str, what: str
) -> None:
    service = request.getfixturevalue(service_name)
    status, headers, body = exchange(service, OVERSIZED[what](prefix))
    assert status == (414 if what == "a request target" else 431)
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    if prefix.startswith("/distribution/"):
        assert error["status_code"] == status
    else:
        assert error["errors"][0]["status"] == status
    assert MARKER.encode() not in body and b"xxxx" not in body


def test_a_malformed_request_line_is_a_json_400_that_does_not_quote_it(edge: EdgeProcess) -> None:
    status, _, body = exchange(edge, f"G{MARKER} / HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 400
    assert json.loads(body)["errors"][0]["status"] == 400
    assert MARKER.encode() not in body


def test_read_limits_are_settings_checked_at_start(tmp_path: Path) -> None:
    from edge.settings import load_edge_settings
    from repository.settings import SettingsError

    assert load_edge_settings(env={}).header_timeout == 20.0
    assert load_edge_settings(env={}).keepalive_timeout == 75.0
    assert load_edge_settings(env={}).body_timeout == 60.0
    for key in ("HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEPALIVE_TIMEOUT"):
        for good in ("0.1", "3600"):
            assert getattr(load_edge_settings(env={f"EDGE_{key}": good}), key.lower()) == float(good)
        for bad in ("0", "0.09", "3601", "soon"):
            with pytest.raises(SettingsError, match=key.lower() if bad != "soon" else key):
                load_edge_settings(env={f"EDGE_{key}": bad})
