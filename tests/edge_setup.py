"""What an operator does on an edge before distributing to it (``devstack.wiring``), and plain calls.

Plain blocking HTTP (``devstack.rest``), usable from sync and async tests alike.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

from devstack import rest, wiring
from devstack.services import EdgeProcess

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One call; answers (status, JSON or text) for every status, errors included."""
    status, answer = rest.request(method, url, token, body, timeout=timeout)
    return status, answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer


def _target(edge: EdgeProcess) -> wiring.EdgeTarget:
    return wiring.edge_target(0, edge.url, edge.admin_token)


def distributor_token(edge: EdgeProcess) -> str:
    return wiring.distributor_token(_target(edge), wiring.State(None))


def trust(edge: EdgeProcess, public_key: str, alias: str = wiring.KEY_ALIAS) -> None:
    wiring.trust_key(_target(edge), public_key, alias)


def download(base_url: str, target: str) -> tuple[int, bytes]:
    """The status and the bytes of a download, as they came (an error body too)."""
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
