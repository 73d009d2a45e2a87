"""What the HA fault tests (tests/test_ha.py) share: edge replicas on a fresh database and bucket
prefix, a service wired to them, which replica is busy moving bytes, and downloads per replica.

Every wait here is a hang guard, never a speed check.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack import rest
from devstack.replicas import EdgeReplicas, s3_environment
from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, trust
from tests.test_distribute_e2e import Service, public_key

MiB = 1024 * 1024
GUARD = 120.0  # seconds: a hang guard only
PREFIX = f"{SOURCE_REPO}/app"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(what: str, check: Callable[[], object], timeout: float = GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextmanager
def edge_replicas(
    base: Path, database_url: str, s3: Mapping[str, str], count: int = 3, env: Mapping[str, str] | None = None
) -> Iterator[EdgeReplicas]:
    """``count`` replicas behind nginx on ``database_url`` and a fresh prefix of ``s3``'s bucket."""
    replicas = EdgeReplicas(
        base, database_url=database_url, s3=s3, prefix=f"ha-{os.urandom(6).hex()}/", count=count, env=env
    )
    try:
        yield replicas.start()
    finally:
        replicas.stop()
        for replica in replicas.replicas:
            print(f"{replica.base_dir.name} log, last lines:\n{replica.log_tail()}")


def service_s3_environment(s3: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The Distribution service's settings for its blobs in ``s3``'s bucket under ``prefix``."""
    return {k.replace("EDGE_", "DISTRIBUTION_", 1): v for k, v in s3_environment(s3, prefix).items()}


def connect(service: Service, replicas: EdgeReplicas, url: str, name: str = "ha-1") -> None:
    """Trust the service's key and issue its token through one replica (the others share both),
    then register the edge at ``url`` (nginx, or a proxy in front of it)."""
    first = replicas.replicas[0]
    trust(first, public_key(service))
    service.add_edge(name, url, distributor_token(first))


def alive(replicas: EdgeReplicas) -> list[EdgeProcess]:
    return [r for r in replicas.replicas if r.returncode is None]


def put(url: str, token: str, data: bytes) -> int:
    """Deploy ``data`` at ``url`` (a path of the uploads repo); answers the status."""
    return rest.request("PUT", url, token, data=data)[0]


def opened(url: str, timeout: float = 30) -> Any:
    """A GET's response, to read as it comes (``with opened(url) as resp``); not followed by proxies."""
    return _DIRECT.open(url, timeout=timeout)


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    """Status and body of a GET; a connection cut part way raises (OSError, http.client errors)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def statuses(edge: EdgeProcess, version: str, files: Mapping[str, bytes]) -> list[int]:
    """Per file of the version: 200 when ``edge`` serves exactly its bytes, else the status seen
    (a 200 with other bytes fails the test at once)."""
    seen = []
    for path, data in files.items():
        status, body = get(f"{edge.artifactory_url}/{PREFIX}/{version}/{path}")
        if status == 200:
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), (edge.url, path)
        seen.append(status)
    return seen


def serves_all(edge: EdgeProcess, version: str, files: Mapping[str, bytes]) -> bool:
    return statuses(edge, version, files) == [200] * len(files)


def _bytes_through(port: int) -> int:
    """Bytes received plus bytes sent on the connections accepted on ``port`` (``ss -ti``)."""
    listing = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return sum(int(n) for n in re.findall(r"\bbytes_(?:received|acked):(\d+)", listing))


def busiest(replicas: EdgeReplicas, at_least: int = 256 * 1024) -> int:
    """The index of the replica moving bytes now (receiving an upload, sending a download): the one
    whose accepted connections carry ``at_least`` bytes over a short window while no other's do."""
    chosen: list[int] = []

    def one_stands_out() -> bool:
        ports = [r.port or 0 for r in replicas.replicas]
        before = [_bytes_through(p) for p in ports]
        time.sleep(0.3)
        grown = [_bytes_through(p) - b for p, b in zip(ports, before, strict=True)]
        top = max(range(len(grown)), key=grown.__getitem__)
        if grown[top] >= at_least and sorted(grown)[-2] < at_least:
            chosen.append(top)
            return True
        return False

    wait_for("one replica moving bytes", one_stands_out, timeout=30)
    return chosen[0]
