"""A virtual repo over a local and a remote repo, between real edges: edge B's virtual repo
resolves its members in order, and its remote member fetches from edge A on a miss, exactly
as a request naming the remote repo would."""

from __future__ import annotations

import hashlib

from devstack.services import EdgeProcess
from tests import test_remote_repos
from tests.edge_setup import http
from tests.remote_setup import add_remote, get, upload, uploads_url

UPLOADS = "artifactory-edge-uploads"
edges = test_remote_repos.edges  # the fixture: edges A and B as real processes
_wait_for = test_remote_repos._wait_for


def _virtual(edge: EdgeProcess, key: str, members: list[str]) -> None:
    body = {"rclass": "virtual", "repositories": members, "anonymousRead": True}
    status, answer = http("PUT", f"{edge.artifactory_url}/api/repositories/{key}", edge.admin_token, body)
    assert status == 201, answer


def _served_from(edge: EdgeProcess, path: str) -> list[str]:
    status, answer = http("GET", f"{edge.artifactory_url}/api/audit?action=download&path={path}", edge.admin_token)
    assert status == 200, answer
    return [r.get("servedFrom") for r in answer["records"]]


def test_a_virtual_repo_over_a_local_and_a_remote_serves_each_and_fetches_a_miss_upstream(edges) -> None:
    a, b = edges
    upload(a, "app/shared.bin", b"from upstream A")
    upload(a, "app/only-upstream.bin", b"only A has this")
    upload(b, "app/shared.bin", b"from local B")
    add_remote(b, "a-remote", uploads_url(a))
    _virtual(b, "all", [UPLOADS, "a-remote"])

    status, body, headers = get(b, "all/app/shared.bin")  # in both: the first member wins
    assert (status, body) == (200, b"from local B")
    status, body, headers = get(b, "all/app/only-upstream.bin")  # a miss everywhere but upstream
    assert (status, body) == (200, b"only A has this")
    assert headers["X-Checksum-Sha256"] == hashlib.sha256(b"only A has this").hexdigest()
    assert get(b, "all/app/nowhere.bin")[0] == 404

    # the remote member cached what it fetched: it is served with A gone
    assert a.stop() == 0
    assert get(b, "all/app/only-upstream.bin")[:2] == (200, b"only A has this")
    assert get(b, "a-remote/app/only-upstream.bin")[:2] == (200, b"only A has this")
    _wait_for(lambda: len(_served_from(b, "app/only-upstream.bin")) >= 3, "B's audit records the downloads")
    assert set(_served_from(b, "app/only-upstream.bin")) == {"a-remote", None}
    assert _served_from(b, "app/shared.bin") == [UPLOADS]


def test_the_member_order_decides_which_copy_a_virtual_repo_serves(edges) -> None:
    a, b = edges
    upload(a, "app/shared.bin", b"from upstream A")
    upload(b, "app/shared.bin", b"from local B")
    add_remote(b, "a-remote", uploads_url(a))
    _virtual(b, "remote-first", ["a-remote", UPLOADS])
    assert get(b, "remote-first/app/shared.bin")[:2] == (200, b"from upstream A")
