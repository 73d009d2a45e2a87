"""What an operator does on an edge before distributing to it, over the edge's own REST API.

Trust the Distribution service's public key, and issue a token with the distributor role.
Plain blocking HTTP (urllib), usable from sync and async tests alike.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from tests.edge_process import EdgeProcess

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One call; answers (status, JSON or text) for every status, errors included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(request, timeout=timeout) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    text = raw.decode("utf-8", "replace")
    return status, json.loads(text) if text and "json" in ctype else text


def distributor_token(edge: EdgeProcess) -> str:
    status, body = http(
        "POST", edge.url + "/access/api/v1/tokens", edge.admin_token, {"role": "distributor", "username": "dist"}
    )
    assert status == 201, body
    return str(body["access_token"])


def trust(edge: EdgeProcess, public_key: str, alias: str = "dist-main") -> None:
    status, body = http(
        "POST",
        edge.url + "/artifactory/api/security/keys/trusted",
        edge.admin_token,
        {"alias": alias, "public_key": public_key},
    )
    assert status in (200, 201), body


def download(base_url: str, target: str) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(f"{base_url}/artifactory/{target}", timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def served(edge: EdgeProcess, version: str, files: dict[str, bytes], prefix: str = "releases-local/app") -> int:
    """How many of a bundle version's files ``edge`` serves at ``prefix/version/path``, each
    checked byte for byte: 0 or all of them is what a fault may leave, never some."""
    count = 0
    for path, data in files.items():
        status, body = download(edge.url, f"{prefix}/{version}/{path}")
        assert status in (200, 404), (path, status)
        if status == 200:
            assert body == data, path
            count += 1
    return count


def cut_off_download(edge: EdgeProcess, target: str) -> None:
    """Start a download of a file larger than loopback's socket buffers hold, read the status
    line, then reset the connection: what a client that goes away part way does."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /artifactory/{target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
