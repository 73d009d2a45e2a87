"""Property-based API tests: schemathesis drives a real ``edge serve`` and a real ``distribution
serve`` from their OpenAPI documents (the ones they serve: tests/test_openapi.py checks that), as
admin, with valid and invalid data.

Every answer must be a non-5xx whose status, content type and body the document describes.
Examples are bounded and derandomized, so a run is reproducible; a failure prints the request
that reproduces it. Before each operation the data the documents' examples name (a file in the
uploads repo, a signed bundle) is put back, since an earlier operation may have deleted it.

Two fields are pinned where the fuzzed value would change the test bench rather than test the
API: edges the fuzzed registration adds all point at the edge process started here (loopback),
so the Distribution service's health checks and key pushes never leave the machine; and fuzzed
IP and geo rules name repos no test uses, since a global rule applies to every request from
every caller, admins and the rules API included, and would refuse this client everything.
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.services import DistributionProcess, EdgeProcess
from repository.http.openapi import load_document

# Seeds the documents' examples point at: a file in the uploads repo, a signed bundle.
UPLOADS = "artifactory-edge-uploads"
FILE_PATH = "tools/app.tar.gz"
FILE_BYTES = b"an artifact schemathesis can find\n" * 64
BUNDLE = ("app", "1.4.0")
RULES = "/artifactory/api/access/rules"
FUZZED_REPOS = "fuzzed-*"
EDGES = "/distribution/api/v1/edges"

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SETTINGS = hypothesis.settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _stopped_cleanly(service: EdgeProcess) -> None:
    code = service.stop()
    print(f"{service.program} log ({service.log_path}), last lines:\n{service.log_tail()}")
    if code != 0:
        pytest.fail(f"{service.program} exited with status {code} on SIGTERM, not 0\n{service.log_tail()}")


def _admin(service: EdgeProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.admin_token}"}


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback is never reached through a proxy a developer has configured
    return session


def _seed_edge(edge: EdgeProcess) -> None:
    with _session() as session:
        answer = session.put(
            f"{edge.artifactory_url}/{UPLOADS}/{FILE_PATH}", data=FILE_BYTES, headers=_admin(edge), timeout=30
        )
    assert answer.status_code in (201, 409), answer.text  # 409: an operation left a file where a folder goes


def _seed_distribution(service: DistributionProcess) -> None:
    """The uploads repo with the file, and the bundle of it, signed; each call is idempotent."""
    name, version = BUNDLE
    # a bundle never targets an edge's uploads repo: its file lands in releases-local
    mapping = {"input": f"{UPLOADS}/(.*)", "output": "releases-local/$1"}
    spec = {"queries": [{"pattern": f"{UPLOADS}/tools/*", "mappings": [mapping]}]}
    with _session() as session:
        repo = session.put(
            f"{service.artifactory_url}/api/repositories/{UPLOADS}", json={}, headers=_admin(service), timeout=30
        )
        assert repo.status_code in (200, 409), repo.text  # 409: an operation made it with other settings
        answer = session.put(
            f"{service.artifactory_url}/{UPLOADS}/{FILE_PATH}", data=FILE_BYTES, headers=_admin(service), timeout=30
        )
        assert answer.status_code in (201, 409), answer.text
        bundle = session.post(
            f"{service.url}/distribution/api/v1/release_bundle",
            json={"name": name, "version": version, "sign_immediately": True, "spec": spec},
            headers=_admin(service),
            timeout=60,
        )
    assert bundle.status_code in (201, 409), bundle.text  # 409: an operation made another app 1.4.0


@pytest.fixture(scope="module")
def edge_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path_factory.mktemp("schemathesis-edge"))
    edge.start()
    try:
        yield edge
    finally:
        _stopped_cleanly(edge)


@pytest.fixture(scope="module")
def distribution_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionProcess]:
    service = DistributionProcess(tmp_path_factory.mktemp("schemathesis-distribution"))
    service.start()
    try:
        yield service
    finally:
        _stopped_cleanly(service)


@pytest.fixture
def seeded_edge(edge_service: EdgeProcess) -> EdgeProcess:
    _seed_edge(edge_service)
    return edge_service


@pytest.fixture
def seeded_distribution(distribution_service: DistributionProcess) -> DistributionProcess:
    _seed_distribution(distribution_service)
    return distribution_service


# The documents as kept in the package (tests/test_openapi.py checks the services serve exactly these).
edge_schema = schemathesis.openapi.from_dict(load_document("edge"))
distribution_schema = schemathesis.openapi.from_dict(load_document("distribution"))


@edge_schema.parametrize()
@SETTINGS
def test_every_edge_operation_answers_as_documented_and_never_with_a_server_error(
    case: schemathesis.Case, seeded_edge: EdgeProcess
) -> None:
    if case.operation.path == RULES and isinstance(case.body, dict) and isinstance(case.body.get("rules"), list):
        for rule in case.body["rules"]:
            if isinstance(rule, dict):
                rule["repos"] = [FUZZED_REPOS]  # a global rule could refuse this client everything, the API too
    case.call_and_validate(base_url=seeded_edge.url, headers=_admin(seeded_edge), checks=CHECKS, timeout=30)


@distribution_schema.parametrize()
@SETTINGS
def test_every_distribution_operation_answers_as_documented_and_never_with_a_server_error(
    case: schemathesis.Case, seeded_distribution: DistributionProcess, edge_service: EdgeProcess
) -> None:
    if case.operation.path == EDGES and isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = edge_service.url  # registered edges are reached: keep them on loopback
    case.call_and_validate(
        base_url=seeded_distribution.url, headers=_admin(seeded_distribution), checks=CHECKS, timeout=30
    )
