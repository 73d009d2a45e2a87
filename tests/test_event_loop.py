"""The event loop an edge runs on: the standard loop by default, uvloop by setting (the standard loop
where uvloop is missing), and the same answers on both (files sent by sendfile included)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from edge.settings import EdgeSettings, load_edge_settings
from repository.serve import loop_factory
from repository.settings import SettingsError
from tests.conftest import UPLOADS
from tests.test_audit import put, records, wait_for

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LARGE = 3 * 1024 * 1024 + 17  # beyond the in-memory size: sent by sendfile


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _DIRECT.open(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def delete(edge: EdgeProcess, path: str) -> int:
    request = urllib.request.Request(f"{edge.artifactory_url}/{UPLOADS}/{path}", method="DELETE")
    request.add_header("Authorization", f"Bearer {edge.admin_token}")
    with _DIRECT.open(request, timeout=60) as resp:
        return resp.status


def three_or_more(found: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return found if len(found) >= 3 else None


def ready_line(edge: EdgeProcess) -> dict[str, Any]:
    for line in edge.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and json.loads(line)["msg"] == "edge node ready":
            return dict(json.loads(line))
    raise AssertionError(f"no ready line in the log: {edge.log_tail()}")


def test_an_edge_runs_on_the_standard_loop_unless_told_to_use_uvloop() -> None:
    assert EdgeSettings().event_loop == "asyncio"
    assert load_edge_settings(env={"EDGE_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(SettingsError, match="event_loop"):
        load_edge_settings(env={"EDGE_EVENT_LOOP": "tokio"})
    import uvloop

    assert loop_factory("uvloop") == (uvloop.new_event_loop, "uvloop")
    assert loop_factory("asyncio") == (None, "asyncio")


def test_without_uvloop_installed_the_standard_loop_runs_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("uvloop") == (None, "asyncio")
    assert "uvloop is not installed" in caplog.text


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_files_small_and_large_are_served_alike_on_either_loop(tmp_path: Path, event_loop: str) -> None:
    small, large = os.urandom(4096), os.urandom(LARGE)
    with EdgeProcess(tmp_path / "edge", env={"EDGE_EVENT_LOOP": event_loop}) as edge:
        assert ready_line(edge)["event_loop"] == event_loop
        put(edge, "small.bin", small)
        put(edge, "large.bin", large)
        for name, data in (("small.bin", small), ("large.bin", large)):
            status, headers, body = get(f"{edge.artifactory_url}/{UPLOADS}/{name}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
            assert headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
        start = LARGE - 1000
        status, headers, body = get(f"{edge.artifactory_url}/{UPLOADS}/large.bin", {"Range": f"bytes={start}-"})
        assert status == 206 and body == large[start:]
        assert headers["Content-Range"] == f"bytes {start}-{LARGE - 1}/{LARGE}"
        finished = wait_for("the audit records", lambda: three_or_more(records(edge, action="download")))
        assert sorted(r["bytes"] for r in finished) == [1000, 4096, LARGE]
    assert edge.returncode == 0


def test_a_hot_file_overwritten_or_deleted_is_answered_as_it_now_is_by_the_very_next_request(
    tmp_path: Path,
) -> None:
    first, second = b"first" * 100, b"second" * 100
    with EdgeProcess(tmp_path / "edge") as edge:
        url = f"{edge.artifactory_url}/{UPLOADS}/hot/file.txt"
        put(edge, "hot/file.txt", first)
        for _ in range(3):  # cached: entry, headers, bytes
            status, headers, body = get(url)
            assert status == 200 and body == first
        put(edge, "hot/file.txt", second)
        status, headers, body = get(url)
        assert status == 200 and body == second
        assert headers["ETag"] == f'"{hashlib.sha256(second).hexdigest()}"'
        assert headers["X-Checksum-Sha256"] == hashlib.sha256(second).hexdigest()
        assert headers["Content-Length"] == str(len(second))
        assert delete(edge, "hot/file.txt") == 204
        status, _, body = get(url)
        assert status == 404 and json.loads(body)["errors"][0]["message"] == "Unable to find item"


def test_a_slow_reader_gets_a_large_file_whole_on_uvloop(tmp_path: Path) -> None:
    """The socket fills again and again: the edge waits for room each time, and sends on."""
    data = os.urandom(8 * 1024 * 1024)
    with EdgeProcess(tmp_path / "edge", env={"EDGE_EVENT_LOOP": "uvloop"}) as edge:
        put(edge, "slow.bin", data)
        with socket.create_connection(("127.0.0.1", edge.port), timeout=60) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            request = f"GET /artifactory/{UPLOADS}/slow.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
                time.sleep(0.0005)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
