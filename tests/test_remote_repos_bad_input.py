"""Bad configurations and bad upstreams of remote repos: refused clearly, nothing kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from tests.edge_setup import http
from tests.fault_servers import SilentServer, ThreadedServer
from tests.remote_setup import CUT_SHORT, add_remote, cached, get, put_remote, start_edge
from tests.remote_upstreams import Lie, liar_app

GOOD = b"the real bytes " * 5000
OTHER = b"other bytes!!! " * 5000
LIES = {
    "short.bin": Lie(announced=GOOD, sent=GOOD[:-100]),
    "wrong.bin": Lie(announced=GOOD, sent=OTHER),
    "slow.bin": Lie(announced=GOOD, sent=GOOD, slow=True),
    "fine.bin": Lie(announced=GOOD, sent=GOOD),
    "bare.bin": Lie(announced=GOOD, sent=GOOD, checksum=False),
}


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    node = start_edge(tmp_path / "b", "edge-b", EDGE_REMOTE_FETCH_DEADLINE="3")
    try:
        yield node
    finally:
        assert node.stop() == 0, node.log_tail()


@pytest.fixture
def liar() -> Iterator[ThreadedServer]:
    server = ThreadedServer(liar_app(LIES)).start()
    try:
        yield server
    finally:
        server.stop()


def _repos(edge: EdgeProcess) -> list[Any]:
    status, answer = http("GET", f"{edge.artifactory_url}/api/repositories", edge.admin_token)
    assert status == 200
    return answer


def _error(answer: Any, status: int) -> str:
    assert answer["errors"][0]["status"] == status, answer
    return answer["errors"][0]["message"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"url": "ftp://127.0.0.1:1/artifactory/x"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http://127.0.0.1:1"}, "url"),
        ({"url": "http://127.0.0.1:99999/artifactory/x"}, "url"),
        ({"url": "http://user:pw@127.0.0.1:1/artifactory/x"}, "url"),
        ({"retrievalCachePeriodSecs": -1}, "retrievalCachePeriodSecs"),
        ({"missedRetrievalCachePeriodSecs": -5}, "missedRetrievalCachePeriodSecs"),
        ({"socketTimeoutMillis": 0}, "socketTimeoutMillis"),
        ({"offline": "yes"}, "offline"),
        ({"unknownField": 1}, "unknownField"),
        ({"contentSynchronisation": {"enabled": True, "statistics": {"on": True}}}, "statistics"),
        ({"password": 12}, "password"),
    ],
)
def test_a_bad_remote_configuration_is_a_400_naming_the_field_and_stores_nothing(edge, fields, named) -> None:
    before = _repos(edge)

    status, answer = put_remote(edge, "remote", **({"url": "http://127.0.0.1:1/artifactory/x"} | fields))

    assert status == 400
    assert named in _error(answer, 400)
    assert _repos(edge) == before
    assert http("GET", f"{edge.artifactory_url}/api/repositories/remote", edge.admin_token)[0] == 404


def test_a_bad_update_leaves_the_configuration_as_it_was_and_credentials_are_never_answered(edge) -> None:
    add_remote(edge, "remote", "http://127.0.0.1:1/artifactory/x", username="bob", password="s3cret-pass")
    url = f"{edge.artifactory_url}/api/repositories/remote"
    before = http("GET", url, edge.admin_token)[1]
    assert before["password"] == "************"
    assert "s3cret-pass" not in str(before)

    status, answer = http("POST", url, edge.admin_token, {"offline": True, "retrievalCachePeriodSecs": -1})

    assert status == 400
    assert http("POST", url, edge.admin_token, {"rclass": "local"})[0] == 409
    assert http("GET", url, edge.admin_token)[1] == before
    assert [r["type"] for r in _repos(edge) if r["key"] == "remote"] == ["REMOTE"]


def test_configuring_a_remote_repo_needs_the_admin_role(edge) -> None:
    status, answer = http(
        "PUT",
        f"{edge.artifactory_url}/api/repositories/remote",
        None,
        {"rclass": "remote", "url": "http://127.0.0.1:1/artifactory/x"},
    )
    assert status == 401
    assert all(r["key"] != "remote" for r in _repos(edge))


def test_an_upstream_url_naming_the_edge_itself_is_refused(edge) -> None:
    for url in (f"{edge.url}/artifactory/remote", f"http://localhost:{edge.port}/artifactory/other"):
        status, answer = put_remote(edge, "remote", url)
        assert status == 400
        assert "itself" in _error(answer, 400)
    assert all(r["key"] != "remote" for r in _repos(edge))


def test_a_chain_of_remotes_that_comes_back_is_refused_with_508(edge, tmp_path) -> None:
    other = start_edge(tmp_path / "c", "edge-c")
    try:
        add_remote(edge, "ring", f"{other.artifactory_url}/ring")
        add_remote(other, "ring", f"{edge.artifactory_url}/ring")

        status, body, _ = get(edge, "ring/app/file.bin")

        assert status == 508
        assert b"Loop detected" in body
    finally:
        assert other.stop() == 0


def test_an_upstream_that_sends_fewer_bytes_than_announced_cuts_the_transfer_and_keeps_nothing(edge, liar) -> None:
    add_remote(edge, "lies", f"{liar.url}/artifactory/lies")
    with pytest.raises(CUT_SHORT):
        get(edge, "lies/short.bin")
    assert not cached(edge, "lies/short.bin")


def test_an_upstream_whose_bytes_do_not_match_its_sha256_cuts_the_transfer_and_keeps_nothing(edge, liar) -> None:
    add_remote(edge, "lies", f"{liar.url}/artifactory/lies")
    with pytest.raises(CUT_SHORT):
        get(edge, "lies/wrong.bin")
    assert not cached(edge, "lies/wrong.bin")
    status, body, _ = get(edge, "lies/fine.bin")
    assert (status, hashlib.sha256(body).digest()) == (200, hashlib.sha256(GOOD).digest())


def test_an_upstream_that_sends_slowly_forever_ends_at_the_fetch_deadline_with_nothing_kept(edge, liar) -> None:
    add_remote(edge, "lies", f"{liar.url}/artifactory/lies")
    with pytest.raises(CUT_SHORT):
        get(edge, "lies/slow.bin")
    assert not cached(edge, "lies/slow.bin")
    status, body, _ = get(edge, "lies/slow.bin", {"Range": "bytes=0-1"})  # waits for a fetch: a clear error
    assert status == 504
    assert "did not send" in _error(json.loads(body), 504)


def test_an_upstream_that_never_answers_is_a_504_after_the_socket_timeout(edge) -> None:
    silent = SilentServer().start()
    try:
        add_remote(edge, "silent", f"{silent.url}/artifactory/x", socketTimeoutMillis=500)
        status, body, _ = get(edge, "silent/app/file.bin")
        assert status == 504
        assert not cached(edge, "silent/app/file.bin")
    finally:
        silent.stop()


def test_an_upstream_that_sends_no_checksum_is_refused_before_any_byte(edge, liar) -> None:
    add_remote(edge, "lies", f"{liar.url}/artifactory/lies")
    status, body, _ = get(edge, "lies/bare.bin")
    assert status == 502
    assert "no checksum" in _error(json.loads(body), 502)
    assert not cached(edge, "lies/bare.bin")
