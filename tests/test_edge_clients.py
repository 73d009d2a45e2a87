"""Existing clients against a real edge process, used the way their users use them.

The dohq-artifactory Python client, the curl command lines from the issue, the
``edge token`` CLI, and a download that outlives a SIGTERM. Nothing here reaches
into the server: every check goes over HTTP or looks at what a client wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from artifactory import ArtifactoryPath
from dohq_artifactory.exception import ArtifactoryException

from tests.edge_process import EdgeProcess

UPLOADS = "artifactory-edge-uploads"
MiB = 1024 * 1024
CLIENT_TIMEOUT = 120


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """curl and requests must talk to loopback directly, whatever proxy a developer has set."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def curl_path() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.fail("the curl binary is required: apt-get install curl")
    return found


def curl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([curl_path(), "-sS", *args], capture_output=True, cwd=cwd, timeout=CLIENT_TIMEOUT)


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    edge = Path(sys.executable).parent / "edge"
    return subprocess.run([str(edge), *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


def write_random(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes; answers their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def upload(edge: EdgeProcess, source: Path, repo_path: str, token: str | None = None) -> dict[str, Any]:
    """``curl -T`` with a Bearer token, as the issue shows; answers the file info the edge sent back."""
    url = f"{edge.artifactory_url}/{UPLOADS}/{repo_path}"
    done = curl("-f", "-H", f"Authorization: Bearer {token or edge.admin_token}", "-T", str(source), url)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def stored_files(edge: EdgeProcess) -> list[Path]:
    return [p for p in (edge.data_dir / "blobs").rglob("*") if p.is_file()]


@contextmanager
def artifactory_path(url: str, **auth: Any) -> Iterator[ArtifactoryPath]:
    """An ArtifactoryPath whose requests session (shared by every path derived from it) is closed afterwards."""
    path = ArtifactoryPath(url, **auth)
    try:
        yield path
    finally:
        path.session.close()


# -- dohq-artifactory ---------------------------------------------------------------------------

AUTH_STYLES = ["apikey", "token", "basic"]


def dohq_auth(style: str, token: str) -> dict[str, Any]:
    """The three ways dohq-artifactory users pass credentials: X-JFrog-Art-Api, Bearer, basic."""
    return {"apikey": {"apikey": token}, "token": {"token": token}, "basic": {"auth": ("admin", token)}}[style]


@pytest.mark.parametrize("style", AUTH_STYLES)
def test_dohq_artifactory_deploys_files_and_reads_them_back_unchanged(
    edge_server: EdgeProcess,
    tmp_path: Path,
    style: str,
) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(os.urandom(300 * 1024 + 7))
    data = app.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("release notes\n")

    auth = dohq_auth(style, edge_server.admin_token)
    with artifactory_path(f"{edge_server.artifactory_url}/{UPLOADS}/tools", **auth) as tools:
        target = tools / "app.bin"
        target.deploy_file(str(app))
        # deploy_file onto an existing folder puts the file inside it, under its own name.
        (tools / "docs" / "readme.txt").deploy_file(str(notes))
        (tools / "docs").deploy_file(str(notes))

        assert target.exists()
        assert not (tools / "missing.bin").exists()
        assert not ArtifactoryPath(f"{edge_server.artifactory_url}/no-such-repo/x", session=tools.session).exists()

        stat = target.stat()
        assert not stat.is_dir
        assert stat.size == len(data)
        assert stat.sha1 == hashlib.sha1(data).hexdigest()
        assert stat.sha256 == hashlib.sha256(data).hexdigest()
        assert stat.md5 == hashlib.md5(data).hexdigest()
        assert stat.repo == UPLOADS
        assert stat.mime_type == "application/octet-stream"

        assert tools.is_dir()
        assert not target.is_dir()
        assert target.is_file()
        assert not (tools / "missing.bin").is_dir()

        assert sorted(p.name for p in tools.iterdir()) == ["app.bin", "docs"]
        assert sorted(p.name for p in (tools / "docs").iterdir()) == ["notes.txt", "readme.txt"]
        assert {str(p) for p in tools.iterdir()} == {str(target), str(tools / "docs")}

        assert target.read_bytes() == data
        assert (tools / "docs" / "notes.txt").read_text() == "release notes\n"


def test_dohq_artifactory_deploy_outside_the_uploads_repo_is_refused_with_403_and_stores_nothing(
    edge_server: EdgeProcess,
    tmp_path: Path,
) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(os.urandom(64 * 1024))

    url = f"{edge_server.artifactory_url}/generic-local/tools/app.bin"
    with artifactory_path(url, apikey=edge_server.admin_token) as target:
        with pytest.raises(ArtifactoryException) as refused:
            target.deploy_file(str(app))
        assert str(refused.value) == "Deployment to an Edge Artifactory node is not supported."
        cause = refused.value.__cause__
        assert isinstance(cause, requests.HTTPError)
        assert cause.response is not None and cause.response.status_code == 403

        assert not target.exists()
    assert stored_files(edge_server) == []


# -- curl -----------------------------------------------------------------------------------------


class CuttingProxy:
    """A loopback TCP proxy for one connection that passes on the first ``limit`` bytes of the
    server's answer, then drops the connection: a download cut off mid-body, every time at the same byte."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._relay_one, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(CLIENT_TIMEOUT)

    def _relay_one(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            request = b""
            while b"\r\n\r\n" not in request:  # a GET: headers only
                chunk = client.recv(64 * 1024)
                if not chunk:
                    return
                request += chunk
            upstream.sendall(request)
            passed = 0
            while passed < self.limit:
                chunk = upstream.recv(min(64 * 1024, self.limit - passed))
                if not chunk:
                    return
                client.sendall(chunk)
                passed += len(chunk)


def test_curl_resumes_a_cut_off_download_and_the_edge_sends_only_the_rest_with_206(
    edge_server: EdgeProcess,
    tmp_path: Path,
) -> None:
    original = tmp_path / "original.bin"
    size = 5 * MiB + 123
    expected = write_random(original, size)
    upload(edge_server, original, "big/original.bin")
    out = tmp_path / "download.bin"

    with CuttingProxy(edge_server.port or 0, limit=2 * MiB) as proxy:
        cut = curl("-f", "-o", str(out), f"http://127.0.0.1:{proxy.port}/artifactory/{UPLOADS}/big/original.bin")
    assert cut.returncode == 18, cut.stderr.decode()  # CURLE_PARTIAL_FILE: the connection dropped mid-body
    have = out.stat().st_size
    assert 0 < have < size

    resumed = curl(
        "-f",
        "-C",
        "-",
        "-o",
        str(out),
        "-w",
        "%{http_code} %{size_download}",
        f"{edge_server.artifactory_url}/{UPLOADS}/big/original.bin",
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert resumed.stdout.decode().split() == ["206", str(size - have)]
    assert out.stat().st_size == size
    assert sha256_of(out) == expected


def test_the_issue_flow_curl_upload_with_a_bearer_token_then_curl_download_gives_the_same_file(
    edge_server: EdgeProcess,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    app = source / "app.tar.gz"
    expected = write_random(app, 256 * 1024 + 1)
    url = f"{edge_server.artifactory_url}/{UPLOADS}/tools/app.tar.gz"

    put = curl("-H", f"Authorization: Bearer {edge_server.admin_token}", "-T", str(app), url, "-w", "\n%{http_code}")
    assert put.returncode == 0, put.stderr.decode()
    body, _, status = put.stdout.decode().rpartition("\n")
    assert status == "201"
    info = json.loads(body)
    assert info["checksums"]["sha256"] == expected
    assert info["size"] == str(app.stat().st_size)
    assert info["downloadUri"] == url

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    get = curl("-f", "-O", url, cwd=fetched)
    assert get.returncode == 0, get.stderr.decode()
    assert sha256_of(fetched / "app.tar.gz") == expected


def test_a_deployer_token_from_edge_token_create_can_upload_and_a_reader_token_gets_403(
    edge_server: EdgeProcess,
    tmp_path: Path,
) -> None:
    app = tmp_path / "app.tar.gz"
    expected = write_random(app, 64 * 1024)

    tokens = {}
    for role in ("deployer", "reader"):
        made = edge_cli("token", "create", "--role", role, "--url", edge_server.url, "--token", edge_server.admin_token)
        assert made.returncode == 0, made.stderr
        tokens[role] = made.stdout.strip()
        assert tokens[role] and "\n" not in tokens[role]
        assert f"(role {role})" in made.stderr

    info = upload(edge_server, app, "tools/app.tar.gz", token=tokens["deployer"])
    assert info["checksums"]["sha256"] == expected
    assert info["createdBy"] == "deployer"

    refused_url = f"{edge_server.artifactory_url}/{UPLOADS}/tools/by-reader.tar.gz"
    refused = curl(
        "-H", f"Authorization: Bearer {tokens['reader']}", "-T", str(app), refused_url, "-w", "\n%{http_code}"
    )
    assert refused.returncode == 0, refused.stderr.decode()
    body, _, status = refused.stdout.decode().rpartition("\n")
    assert status == "403"
    assert json.loads(body)["errors"][0]["status"] == 403

    # The reader can still read what the deployer uploaded, and its own upload is not there.
    got = tmp_path / "got.tar.gz"
    read = curl(
        "-f",
        "-H",
        f"Authorization: Bearer {tokens['reader']}",
        "-o",
        str(got),
        f"{edge_server.artifactory_url}/{UPLOADS}/tools/app.tar.gz",
    )
    assert read.returncode == 0, read.stderr.decode()
    assert sha256_of(got) == expected
    missing = curl("-o", os.devnull, "-w", "%{http_code}", refused_url)
    assert missing.stdout.decode() == "404"


# -- shutdown -------------------------------------------------------------------------------------


def test_a_download_running_when_the_edge_gets_sigterm_still_completes_with_every_byte(
    edge_server: EdgeProcess,
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.bin"
    size = 200 * MiB
    expected = write_random(big, size)
    upload(edge_server, big, "big/big.bin")
    big.unlink()
    out = tmp_path / "out.bin"

    # 200 MiB at 64 MiB/s: the download lasts about three seconds, far longer than the SIGTERM takes.
    download = subprocess.Popen(
        [
            curl_path(),
            "-sS",
            "-f",
            "--limit-rate",
            "64M",
            "-o",
            str(out),
            f"{edge_server.artifactory_url}/{UPLOADS}/big/big.bin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size > 0):
            assert download.poll() is None, download.stderr.read().decode() if download.stderr else ""
            if time.monotonic() >= deadline:  # a hang guard, not a speed check
                pytest.fail("the download never started")
            time.sleep(0.02)
        edge_server.terminate()
        assert out.stat().st_size < size, "the download finished before SIGTERM; the test proved nothing"

        _, stderr = download.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if download.poll() is None:
            download.kill()
            download.communicate()
    assert download.returncode == 0, stderr.decode()
    assert out.stat().st_size == size
    assert sha256_of(out) == expected
    assert edge_server.wait(timeout=CLIENT_TIMEOUT) == 0
