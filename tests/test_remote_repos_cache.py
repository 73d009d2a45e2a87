"""Remote repos between real edges: the cache's bound, statistics upstream, access rules, workers."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.services import EdgeProcess
from tests.edge_setup import http
from tests.fault_servers import ThreadedServer
from tests.remote_setup import add_remote, cached, get, start_edge, upload, uploads_url
from tests.remote_upstreams import Relay, relay_app

LIMIT = 2000


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[EdgeProcess]:
    a = start_edge(tmp_path / "a", "edge-a")
    try:
        yield a
    finally:
        assert a.stop() == 0, a.log_tail()


@pytest.fixture
def relay(upstream: EdgeProcess) -> Iterator[tuple[Relay, ThreadedServer]]:
    state = Relay(upstream.url)
    server = ThreadedServer(relay_app(state)).start()
    try:
        yield state, server
    finally:
        server.stop()


def _edge(tmp_path: Path, workers: int = 1, **env: str) -> EdgeProcess:
    return start_edge(tmp_path / "b", "edge-b", workers=workers, **env)


def _stop(edge: EdgeProcess) -> None:
    assert edge.stop() == 0, edge.log_tail()


def _wait_for(check: Callable[[], bool], what: str) -> None:
    for _ in range(300):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def test_the_cache_holds_its_bound_exactly_then_drops_the_least_recently_used_but_never_shared_bytes(
    upstream, tmp_path
) -> None:
    first, second = os.urandom(LIMIT // 2), os.urandom(LIMIT // 2)
    upload(upstream, "app/first.bin", first)
    upload(upstream, "app/second.bin", second)
    upload(upstream, "app/third.bin", b"3")
    b = _edge(tmp_path, EDGE_REMOTE_CACHE_MAX_BYTES=str(LIMIT))
    try:
        upload(b, "mine/first-copy.bin", first)  # the same bytes, held by the edge's own repo
        add_remote(b, "remote", uploads_url(upstream))
        assert get(b, "remote/app/first.bin")[:2] == (200, first)
        assert get(b, "remote/app/second.bin")[:2] == (200, second)
        assert cached(b, "remote/app/first.bin") and cached(b, "remote/app/second.bin")  # at the bound: kept

        assert get(b, "remote/app/third.bin")[:2] == (200, b"3")  # one byte over the bound

        assert not cached(b, "remote/app/first.bin")
        assert cached(b, "remote/app/second.bin") and cached(b, "remote/app/third.bin")
        assert get(b, "artifactory-edge-uploads/mine/first-copy.bin")[:2] == (200, first)
        assert get(b, "remote/app/first.bin")[:2] == (200, first)  # fetched again on demand
        assert not cached(b, "remote/app/second.bin")
    finally:
        _stop(b)


def test_cached_downloads_are_reported_upstream_and_counted_in_its_statistics(upstream, tmp_path) -> None:
    b = _edge(tmp_path, EDGE_REMOTE_STATS_INTERVAL="0.2")
    try:
        upload(upstream, "app/x.bin", b"counted")
        sync = {"enabled": True, "statistics": {"enabled": True}}
        add_remote(b, "remote", uploads_url(upstream), accessToken=upstream.admin_token, contentSynchronisation=sync)
        for _ in range(4):  # one fetch, then three cached hits
            assert get(b, "remote/app/x.bin")[:2] == (200, b"counted")

        def count() -> int:
            url = f"{upstream.artifactory_url}/api/storage/artifactory-edge-uploads/app/x.bin?stats"
            return int(http("GET", url, upstream.admin_token)[1]["downloadCount"])

        _wait_for(lambda: count() >= 4, "the upstream counts the cached downloads")
        assert count() == 4
    finally:
        _stop(b)


def test_statistics_from_an_anonymous_caller_or_for_unreadable_files_are_refused(upstream) -> None:
    url = f"{upstream.artifactory_url}/api/downloads/statistics"
    body = {"downloads": [{"repo": "artifactory-edge-uploads", "path": "app/x.bin", "count": 5}]}
    assert http("POST", url, None, body)[0] == 401
    bad = {"downloads": [{"repo": "artifactory-edge-uploads", "path": "app/x.bin", "count": -1}]}
    assert http("POST", url, upstream.admin_token, bad)[0] == 400
    assert http("POST", url, upstream.admin_token, {"downloads": []})[0] == 400


def test_a_denied_request_never_reaches_the_upstream_and_a_signed_url_does(upstream, relay, tmp_path) -> None:
    state, server = relay
    upload(upstream, "app/private.bin", b"private")
    b = _edge(tmp_path)
    try:
        add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads", anonymousRead=False)

        assert get(b, "remote/app/private.bin")[0] == 401
        assert state.gets == []

        body = {"repo_path": "/remote/app/private.bin", "valid_for_secs": 60}
        status, signed = http("POST", f"{b.artifactory_url}/api/signed/url", b.admin_token, body)
        assert status == 200, signed
        target = signed.split("/artifactory/", 1)[1]
        assert get(b, target)[:2] == (200, b"private")

        def audited() -> set[tuple[str, int]]:
            records = http("GET", f"{b.artifactory_url}/api/audit?repo=remote", b.admin_token)[1]["records"]
            return {(r["path"], r["status"]) for r in records}

        _wait_for(lambda: {("app/private.bin", 401), ("app/private.bin", 200)} <= audited(), "both are audited")
    finally:
        _stop(b)


def test_with_two_workers_each_process_fetches_at_most_once_and_every_client_gets_the_bytes(
    upstream, relay, tmp_path
) -> None:
    state, server = relay
    data = os.urandom(2 * 1024 * 1024)
    upload(upstream, "app/big.bin", data)
    b = _edge(tmp_path, workers=2)
    try:
        add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads")
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: get(b, "remote/app/big.bin"), range(20)))
        assert {(status, hashlib.sha256(body).digest()) for status, body, _ in answers} == {
            (200, hashlib.sha256(data).digest())
        }
        assert 1 <= state.downloads_of("app/big.bin") <= 2
    finally:
        _stop(b)


def test_deleting_a_remote_repo_removes_its_cache_and_a_local_repo_cannot_be_deleted(upstream, tmp_path) -> None:
    upload(upstream, "app/x.bin", b"cached bytes")
    b = _edge(tmp_path)
    try:
        upload(b, "mine/x.bin", b"cached bytes")
        add_remote(b, "remote", uploads_url(upstream))
        assert get(b, "remote/app/x.bin")[:2] == (200, b"cached bytes")
        url = f"{b.artifactory_url}/api/repositories"

        assert http("DELETE", f"{url}/artifactory-edge-uploads", b.admin_token)[0] == 409
        assert http("DELETE", f"{url}/remote", None)[0] == 401
        status, _ = http("DELETE", f"{url}/remote", b.admin_token)

        assert status == 200
        assert http("GET", f"{url}/remote", b.admin_token)[0] == 404
        assert all(r["key"] != "remote" for r in http("GET", url, b.admin_token)[1])
        assert get(b, "remote/app/x.bin")[0] == 404
        assert get(b, "artifactory-edge-uploads/mine/x.bin")[:2] == (200, b"cached bytes")
        add_remote(b, "remote", uploads_url(upstream))  # the key is free again, its cache empty
        assert not cached(b, "remote/app/x.bin")
    finally:
        _stop(b)
