"""Bad input to pull mode, against the Distribution service as a real process: the credential
works for its own edge's pull calls only, a blob is served only to an edge it was distributed
to, and a malformed report is a 400 that changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pull_setup import PULL_EDGE, call, register
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, running_service, sites_of
from wire import pull

FILES = {"a.bin": b"first file of the bundle\n", "b.bin": b"second\n"}
OTHER = {"c.bin": b"only in the bundle for the other edge\n"}
GOOD = {"state": "In progress", "distributed_files": 1, "distributed_bytes": 7, "error": ""}


class Two:
    """Two pull-mode edges, each with one distribution in queue: app 1.0 to A, app 2.0 to B."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.a, self.b = register(service, "pull-a", "site-a"), register(service, "pull-b", "site-b")
        service.signed_bundle("1.0", FILES)
        service.signed_bundle("2.0", OTHER)
        self.job_a = self._distribute("1.0", "site-a")
        self.job_b = self._distribute("2.0", "site-b")

    def _distribute(self, version: str, site: str) -> int:
        rules = [{"site_name": site, "city_name": "*", "country_codes": ["*"]}]
        status, body = self.service.call("POST", f"{V1}/distribution/app/{version}", {"distribution_rules": rules})
        assert status == 202, body
        return int(body["id"])

    def url(self, path: str) -> str:
        return self.service.process.url + path

    def site(self, version: str, dist_id: int, edge: str) -> dict[str, Any]:
        return sites_of(self.service.status(version, dist_id))[edge]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


@pytest.fixture
def two(service: Service) -> Two:
    return Two(service)


def test_a_pull_mode_registration_answers_the_credential_once_and_refuses_a_url_or_token(service: Service) -> None:
    for extra in ({"url": "http://edge:8082"}, {"token": "t"}, {"mode": "sideways"}):
        status, body = service.call("POST", f"{V1}/edges", PULL_EDGE | extra)
        assert status == 400, body
        assert set(body) >= {"status_code", "message"} and body["status_code"] == 400
    assert service.call("GET", f"{V1}/edges") == (200, [])
    credential = register(service)
    assert pull.credential_edge(credential) == "pull-1"
    status, again = service.call("POST", f"{V1}/edges", PULL_EDGE)
    assert status == 200 and "credential" not in again  # a retry: the same edge, its credential not shown again
    status, listed = service.call("GET", f"{V1}/edges")
    assert status == 200 and "credential" not in listed[0] and listed[0]["url"] is None


def test_a_credential_works_only_for_its_own_edges_pull_calls(two: Two) -> None:
    work_a = two.url(pull.work_path("pull-a"))
    status, body = call("GET", work_a, two.a)
    assert status == 200, body
    assert body == {"work": [{"distribution_id": two.job_a, "type": "distribute", "name": "app", "version": "1.0"}]}
    assert call("GET", work_a)[0] == 401  # no credential
    assert call("GET", work_a, two.a[:-1] + ("0" if two.a[-1] != "0" else "1"))[0] == 401  # a wrong one
    assert call("GET", work_a, "pull-a." + "0" * 64)[0] == 401
    status, body = call("GET", two.url(pull.work_path("pull-b")), two.a)  # another edge's work
    assert status == 403, body
    assert call("POST", two.url(pull.job_path("pull-b", two.job_b)), two.a, GOOD)[0] == 403
    # the credential is nothing to the service's other APIs, whichever header carries it
    assert call("GET", two.url(f"{V1}/edges"), two.a)[0] == 401
    assert call("GET", two.url(f"{V1}/edges"), headers={"Authorization": f"Bearer {two.a}"})[0] == 401
    assert call("GET", two.url(f"{V1}/release_bundle"), two.a)[0] == 401


def test_rotating_a_credential_retires_the_old_one_and_revoking_leaves_none(two: Two) -> None:
    work_a = two.url(pull.work_path("pull-a"))
    status, body = two.service.call("POST", f"{V1}/edges/pull-a/credential")
    assert status == 201, body
    new = body["credential"]
    assert call("GET", work_a, two.a)[0] == 401
    assert call("GET", work_a, new)[0] == 200
    assert two.service.call("DELETE", f"{V1}/edges/pull-a/credential")[0] == 204
    assert call("GET", work_a, new)[0] == 401
    assert two.service.call("POST", f"{V1}/edges/nowhere/credential")[0] == 404


def test_a_blob_is_served_only_to_an_edge_it_was_distributed_to_and_resumes_by_range(two: Two) -> None:
    own = hashlib.sha256(FILES["a.bin"]).hexdigest()
    status, body = call("GET", two.url(pull.blob_path("pull-a", own)), two.a)
    assert (status, body) == (200, FILES["a.bin"])
    status, body = call("GET", two.url(pull.blob_path("pull-a", own)), two.a, headers={"Range": "bytes=6-"})
    assert (status, body) == (206, FILES["a.bin"][6:])
    others = hashlib.sha256(OTHER["c.bin"]).hexdigest()  # held by the service, distributed to pull-b only
    for sha256 in (others, hashlib.sha256(b"nothing").hexdigest(), "not-a-sha256"):
        status, body = call("GET", two.url(pull.blob_path("pull-a", sha256)), two.a)
        assert status == 404, body
    assert call("GET", two.url(pull.blob_path("pull-a", own)), two.b)[0] == 403
    assert call("GET", two.url(pull.blob_path("pull-b", own)), two.b)[0] == 404
    assert call("GET", two.url(pull.blob_path("pull-b", others)), two.b)[0] == 200
    status, body = call("GET", two.url(pull.manifest_path("pull-a", "app", "2.0")), two.a)
    assert status == 404, body


@pytest.mark.parametrize(
    "body",
    [
        {},
        GOOD | {"state": "Done"},
        GOOD | {"state": "In queue"},
        GOOD | {"distributed_files": -1},
        GOOD | {"distributed_bytes": 1.5},
        GOOD | {"distributed_files": 99},
        GOOD | {"error": "not failed"},
        GOOD | {"state": "Failed", "error": ""},
        GOOD | {"transaction_id": "abc"},
        GOOD | {"transaction_id": None},
        GOOD | {"transaction_id": "ab" * 32, "published": None},
        GOOD | {"published": {"files": 1, "bytes": 7, "sha256": "0" * 64}},
        GOOD | {"state": "Completed"},
        GOOD | {"extra": 1},
        [GOOD],
    ],
)
def test_a_malformed_report_is_a_400_and_changes_nothing(two: Two, body: Any) -> None:
    before = two.site("1.0", two.job_a, "pull-a")
    status, answer = call("POST", two.url(pull.job_path("pull-a", two.job_a)), two.a, body)
    assert status == 400, answer
    assert answer["status_code"] == 400 and answer["message"]
    assert two.site("1.0", two.job_a, "pull-a") == before
    assert before["status"] == "In queue"


def test_key_propagation_never_calls_a_pull_mode_edge_and_says_how_to_trust_the_key_there(two: Two) -> None:
    status, body = two.service.call("POST", f"{V1}/keys/gpg/propagate")
    assert status == 200, body
    assert body["status"] == "FAILURE"
    assert {d["name"] for d in body["details"]} == {"pull-a", "pull-b"}
    assert all("edge keys trust" in d["message"] for d in body["details"])
