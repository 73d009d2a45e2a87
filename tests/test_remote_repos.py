"""Smart remote repos between real edges: edge B's remote repo pulls from edge A on a miss."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.services import EdgeProcess
from tests.edge_setup import http
from tests.fault_servers import ThreadedServer
from tests.remote_setup import CUT_SHORT, add_remote, cached, get, start_edge, upload, uploads_url
from tests.remote_upstreams import Relay, relay_app

DATA = os.urandom(3 * 1024 * 1024 + 17)  # larger than one chunk: streamed, not served from memory
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[tuple[EdgeProcess, EdgeProcess]]:
    a = start_edge(tmp_path / "a", "edge-a")
    b = start_edge(tmp_path / "b", "edge-b")
    try:
        yield a, b
    finally:
        for edge in (b, a):
            if edge.returncode is None:
                assert edge.stop() == 0, edge.log_tail()


@pytest.fixture
def relay(edges: tuple[EdgeProcess, EdgeProcess]) -> Iterator[tuple[Relay, ThreadedServer]]:
    state = Relay(edges[0].url)
    server = ThreadedServer(relay_app(state)).start()
    try:
        yield state, server
    finally:
        server.stop()


def _download_stats(edge: EdgeProcess, target: str) -> int:
    status, answer = http("GET", f"{edge.artifactory_url}/api/storage/{target}?stats", edge.admin_token)
    assert status == 200, answer
    return int(answer["downloadCount"])


def _wait_for(check: object, what: str) -> None:
    for _ in range(200):
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def test_twenty_clients_missing_one_file_cause_one_upstream_download_and_all_get_its_bytes(edges, relay) -> None:
    a, b = edges
    state, server = relay
    upload(a, "app/big.bin", DATA)
    add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: get(b, "remote/app/big.bin"), range(20)))

    assert [status for status, _, _ in answers] == [200] * 20
    assert {hashlib.sha256(body).hexdigest() for _, body, _ in answers} == {SHA}
    assert {headers["X-Checksum-Sha256"] for _, _, headers in answers} == {SHA}
    assert state.downloads_of("app/big.bin") == 1
    _wait_for(lambda: _download_stats(a, "artifactory-edge-uploads/app/big.bin") >= 1, "A counts the download")
    assert _download_stats(a, "artifactory-edge-uploads/app/big.bin") == 1

    assert a.stop() == 0
    status, body, headers = get(b, "remote/app/big.bin")
    assert (status, hashlib.sha256(body).hexdigest()) == (200, SHA)
    status, body, headers = get(b, "remote/app/big.bin", {"Range": "bytes=100-199"})
    assert (status, body, headers["Content-Range"]) == (206, DATA[100:200], f"bytes 100-199/{len(DATA)}")
    status, body, _ = get(b, "remote/app/other.bin")
    assert status == 502
    assert http("GET", f"{b.artifactory_url}/api/repositories", b.admin_token)[1][0]["type"] in ("LOCAL", "REMOTE")


def test_a_byte_flipped_on_the_way_is_refused_nothing_kept_and_a_clean_upstream_then_serves(edges, relay) -> None:
    a, b = edges
    state, server = relay
    upload(a, "app/big.bin", DATA)
    add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads")
    state.flip = True

    with pytest.raises(CUT_SHORT):
        get(b, "remote/app/big.bin")
    assert not cached(b, "remote/app/big.bin")
    status, _, _ = get(b, "remote/app/big.bin", {"Range": "bytes=0-9"})  # a follower: a clear error
    assert status == 502
    assert not cached(b, "remote/app/big.bin")

    state.flip = False
    status, body, _ = get(b, "remote/app/big.bin")
    assert (status, hashlib.sha256(body).hexdigest()) == (200, SHA)
    assert cached(b, "remote/app/big.bin")


def test_a_range_on_a_miss_fetches_the_whole_file_and_answers_the_range(edges) -> None:
    a, b = edges
    upload(a, "app/big.bin", DATA)
    add_remote(b, "remote", uploads_url(a))

    status, body, headers = get(b, "remote/app/big.bin", {"Range": "bytes=-500"})

    size = len(DATA)
    assert (status, body, headers["Content-Range"]) == (206, DATA[-500:], f"bytes {size - 500}-{size - 1}/{size}")
    assert cached(b, "remote/app/big.bin")


def test_a_head_on_a_miss_asks_the_upstream_and_fetches_nothing(edges) -> None:
    a, b = edges
    upload(a, "app/big.bin", DATA)
    add_remote(b, "remote", uploads_url(a))

    status, answer = http("HEAD", f"{b.artifactory_url}/remote/app/big.bin")

    assert status == 200
    assert not cached(b, "remote/app/big.bin")


def test_offline_serves_only_what_is_cached_and_never_asks_the_upstream(edges, relay) -> None:
    a, b = edges
    state, server = relay
    upload(a, "app/one.bin", b"one")
    upload(a, "app/two.bin", b"two")
    add_remote(b, "remote", f"{server.url}/artifactory/artifactory-edge-uploads", retrievalCachePeriodSecs=0)
    assert get(b, "remote/app/one.bin")[:2] == (200, b"one")
    status, answer = http("POST", f"{b.artifactory_url}/api/repositories/remote", b.admin_token, {"offline": True})
    assert (status, answer["offline"]) == (200, True)
    seen = len(state.authorizations)

    assert get(b, "remote/app/one.bin")[:2] == (200, b"one")
    assert get(b, "remote/app/two.bin")[0] == 404
    assert len(state.authorizations) == seen


def test_a_miss_upstream_is_remembered_for_the_missed_retrieval_period(edges) -> None:
    a, b = edges
    add_remote(b, "remembers", uploads_url(a), missedRetrievalCachePeriodSecs=3600)
    add_remote(b, "forgets", uploads_url(a), missedRetrievalCachePeriodSecs=0)
    assert get(b, "remembers/app/late.bin")[0] == 404
    assert get(b, "forgets/app/late.bin")[0] == 404

    upload(a, "app/late.bin", b"late")

    assert get(b, "remembers/app/late.bin")[0] == 404
    assert get(b, "forgets/app/late.bin")[:2] == (200, b"late")


def test_a_file_deleted_upstream_is_dropped_with_origin_absence_detection_only(edges) -> None:
    a, b = edges
    upload(a, "app/gone.bin", b"soon gone")
    sync = {"enabled": True, "source": {"originAbsenceDetection": True}}
    add_remote(b, "detects", uploads_url(a), retrievalCachePeriodSecs=0, contentSynchronisation=sync)
    add_remote(b, "keeps", uploads_url(a), retrievalCachePeriodSecs=0)
    for key in ("detects", "keeps"):
        assert get(b, f"{key}/app/gone.bin")[:2] == (200, b"soon gone")

    status, _ = http("DELETE", f"{uploads_url(a)}/app/gone.bin", a.admin_token)
    assert status == 204

    assert get(b, "detects/app/gone.bin")[0] == 404
    assert not cached(b, "detects/app/gone.bin")
    assert get(b, "keeps/app/gone.bin")[:2] == (200, b"soon gone")


def test_a_listing_the_upstream_sends_in_pieces_is_answered_whole(edges, relay) -> None:
    a, b = edges
    state, server = relay
    state.halves = True
    upload(a, "app/one.bin", b"one")
    upload(a, "app/deeper/two.bin", b"two")
    add_remote(b, "pieces", f"{server.url}/artifactory/artifactory-edge-uploads", retrievalCachePeriodSecs=0)

    assert _children(b, "pieces/app") == {"/one.bin", "/deeper"}
    status, answer = http("GET", f"{b.artifactory_url}/api/storage/pieces/app?list&deep=1", b.admin_token)
    assert status == 200, answer
    assert {f["uri"] for f in answer["files"]} == {"/one.bin", "/deeper/two.bin"}


def _children(edge: EdgeProcess, target: str) -> set[str]:
    status, answer = http("GET", f"{edge.artifactory_url}/api/storage/{target}", edge.admin_token)
    assert status == 200, answer
    return {c["uri"] for c in answer["children"]}


def test_listings_come_from_the_upstream_and_are_asked_again_after_the_cache_period(edges) -> None:
    a, b = edges
    upload(a, "app/one.bin", b"one")
    sync = {"enabled": True, "source": {"originAbsenceDetection": True}}
    add_remote(b, "fresh", uploads_url(a), retrievalCachePeriodSecs=0, contentSynchronisation=sync)
    add_remote(b, "kept", uploads_url(a), retrievalCachePeriodSecs=3600)
    assert _children(b, "fresh/app") == _children(b, "kept/app") == {"/one.bin"}
    assert get(b, "fresh/app/one.bin")[:2] == (200, b"one")

    upload(a, "app/two.bin", b"two")
    assert _children(b, "fresh/app") == {"/one.bin", "/two.bin"}
    assert _children(b, "kept/app") == {"/one.bin"}
    status, answer = http("GET", f"{b.artifactory_url}/api/storage/fresh/app?list&deep=1", b.admin_token)
    assert {f["uri"] for f in answer["files"]} == {"/one.bin", "/two.bin"}
    assert answer["uri"].startswith(f"{b.artifactory_url}/api/storage/fresh")

    assert http("DELETE", f"{uploads_url(a)}/app/one.bin", a.admin_token)[0] == 204
    assert _children(b, "fresh/app") == {"/two.bin"}
    assert not cached(b, "fresh/app/one.bin")  # noticed in the listing, dropped from the cache
