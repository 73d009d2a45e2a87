"""Property-based API tests: schemathesis drives a real ``edge serve`` and a real ``distribution
serve`` from their OpenAPI documents (the ones they serve: tests/test_openapi.py checks that), as
admin, with valid and invalid data, under every check schemathesis has.

Every answer must be documented (status, content type, headers, body); valid requests must be
accepted and invalid ones refused; a method a path lacks must be a 405 with ``Allow``. Examples
are bounded and derandomized, so a run is reproducible; a failure prints the request that
reproduces it. Before each operation the data the documents' examples name (a file in the
uploads repo, a signed bundle, a trusted signing key) is put back, since an earlier operation
may have changed it. Formats the documents name (``artifact-path``, ``cidr``, ``aql``...) are
taught to schemathesis in ``tests/api_formats.py``.

A valid case is completed where a JSON schema cannot say what valid is (``_complete``): a body
field that must equal a path parameter, a time relative to now, a signature over another
field, names unique across a list, a password a new user needs, object keys that must be user
or group names, or property keys (OpenAPI 3.0 has no keyword for keys). Download answers may be 412 and 416 to
valid requests: conditionals and ranges are judged on the file as it is. Two fields are pinned where a
fuzzed value would change the test bench rather than test the API: edges the fuzzed
registration adds all point at the edge process started here (loopback), so the Distribution
service's health checks and key pushes never leave the machine; and fuzzed IP and geo rules
name repos no test uses, since a global rule applies to every request from every caller, admins
and the rules API included, and would refuse this client everything.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks

from devstack.services import DistributionProcess, EdgeProcess
from repository.http.openapi import load_document
from tests import api_formats
from tests.gpg_keys import TestKey
from wire import protocol

# Seeds the documents' examples point at: a file in the uploads repo, a signed bundle.
UPLOADS = "artifactory-edge-uploads"
FILE_PATH = "tools/app.tar.gz"
FILE_BYTES = b"an artifact schemathesis can find\n" * 64
BUNDLE = ("app", "1.4.0")
RULES = "/artifactory/api/access/rules"
FUZZED_REPOS = "fuzzed-*"
EDGES = "/distribution/api/v1/edges"
SIGNED_URL = "/artifactory/api/signed/url"
TX_START = "/artifactory/api/distribution/transactions"
USERS = "/artifactory/api/security/users/{name}"
TRUSTED_KEYS = "/artifactory/api/security/keys/trusted"
SIGNER_ALIAS = "schemathesis-signer"
REPOSITORY = "/artifactory/api/repositories/{key}"
METADATA = "/artifactory/api/metadata/{repo}/{path}"

SETTINGS = hypothesis.settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
# How the services refuse invalid data: schemathesis' statuses, and 414 for a request target too
# long to parse (fuzzed paths of 1024 characters, percent-encoded, can be that long).
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]
# How a download answers a valid request besides 2xx: RFC 9110's conditionals and ranges decide
# on the file as it is (412 for If-Match, 416 for a range past its end).
DOWNLOAD_ANSWERS = ["2xx", "3xx", "401", "403", "404", "409", "412", "416", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        "operations": [
            {
                "include-operation-id": ["download", "download_head"],
                "checks": {"positive_data_acceptance": {"expected-statuses": DOWNLOAD_ANSWERS}},
            }
        ],
    }
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


@pytest.fixture(scope="module")
def signer() -> TestKey:
    """The key the edge trusts for fuzzed manifests (the formats' first key)."""
    return api_formats.KEYS.pool()[0]


def _seed_edge(edge: EdgeProcess, signer: TestKey) -> None:
    with _session() as session:
        answer = session.put(
            f"{edge.artifactory_url}/{UPLOADS}/{FILE_PATH}", data=FILE_BYTES, headers=_admin(edge), timeout=30
        )
        trusted = session.post(
            edge.url + TRUSTED_KEYS,
            json={"alias": SIGNER_ALIAS, "public_key": signer.public},
            headers=_admin(edge),
            timeout=30,
        )
    assert answer.status_code in (201, 409), answer.text  # 409: an operation left a file where a folder goes
    assert trusted.status_code in (200, 201, 409), trusted.text  # 409: an operation took the alias


def _seed_distribution(service: DistributionProcess) -> None:
    """The file in the uploads repo and in the specs' source repo, and the bundle of it, signed;
    each call is idempotent."""
    name, version = BUNDLE
    # a bundle never targets an edge's uploads repo: its file lands in releases-local
    mapping = {"input": f"{api_formats.SPEC_SOURCE}/(.*)", "output": "releases-local/$1"}
    spec = {"queries": [{"pattern": f"{api_formats.SPEC_SOURCE}/tools/*", "mappings": [mapping]}]}
    with _session() as session:
        for repo_key in (UPLOADS, api_formats.SPEC_SOURCE):
            repo = session.put(
                f"{service.artifactory_url}/api/repositories/{repo_key}", json={}, headers=_admin(service), timeout=30
            )
            assert repo.status_code in (200, 409), repo.text  # 409: an operation made it with other settings
            answer = session.put(
                f"{service.artifactory_url}/{repo_key}/{FILE_PATH}",
                data=FILE_BYTES,
                headers=_admin(service),
                timeout=30,
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
def seeded_edge(edge_service: EdgeProcess, signer: TestKey) -> EdgeProcess:
    _seed_edge(edge_service, signer)
    return edge_service


@pytest.fixture
def seeded_distribution(distribution_service: DistributionProcess) -> DistributionProcess:
    _seed_distribution(distribution_service)
    return distribution_service


load_all_checks()
ALL_CHECKS = CHECKS.get_all()
api_formats.register()

# The documents as kept in the package (tests/test_openapi.py checks the services serve exactly these).
edge_schema = schemathesis.openapi.from_dict(load_document("edge"), config=CONFIG)
distribution_schema = schemathesis.openapi.from_dict(load_document("distribution"), config=CONFIG)


def _complete(case: schemathesis.Case, bench: dict[str, Any]) -> None:
    """Complete a valid case where the schema cannot say what valid is, and pin the fields that
    would change the test bench (see the module's docstring). An invalid case is sent as drawn:
    the field may be what makes it invalid."""
    body = case.body
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return
    if case.operation.path == TX_START and isinstance(body, str):  # the manifest as the body: sign it
        signature = base64.b64encode(bench["sign"](body.encode())).decode()
        case.headers = {**(case.headers or {}), protocol.SIGNATURE_HEADER: signature}
    if not isinstance(body, dict):
        return
    path, parameters = case.operation.path, case.path_parameters or {}
    for field in ("key", "name", "version"):  # a body field that must equal the path parameter
        if field in body and field in parameters:
            body[field] = parameters[field]
    if path == RULES and isinstance(body.get("rules"), list):
        for rule in body["rules"]:
            if isinstance(rule, dict):
                rule["repos"] = [FUZZED_REPOS]  # a global rule could refuse this client everything, the API too
    if path == EDGES and "url" in body:
        body["url"] = bench["edge_url"]  # registered edges are reached: keep them on loopback
    if path == SIGNED_URL and "expiry" in body:
        body["expiry"] = int((time.time() + 3600) * 1000)  # in the future
    if path == TX_START and isinstance(body.get("manifest"), str):
        body["signature"] = bench["sign"](body["manifest"].encode()).decode()  # by the key the edge trusts
    if path == REPOSITORY:  # virtual repos are an edge's; their members must exist
        if not bench.get("virtual_repos"):
            body.pop("repositories", None)
            body["rclass"] = "local" if body.get("rclass") == "virtual" else body.get("rclass", "local")
        elif "repositories" in body:
            body["repositories"] = [UPLOADS]
            if case.method == "PUT":  # a PUT names the class of the repo it makes: only a virtual one has members
                body["rclass"] = "virtual"
    if path == USERS and case.method == "PUT":
        body.setdefault("password", "a password for a new user")
    if path == METADATA and isinstance(body.get("props"), dict):  # property keys (no OpenAPI 3.0 keyword for keys)
        body["props"] = {f"prop-{i}": values for i, values in enumerate(body["props"].values())}
    if isinstance(body.get("tags"), dict):  # tag keys are names (no OpenAPI 3.0 keyword constrains a key)
        body["tags"] = {f"tag-{i}": value for i, value in enumerate(body["tags"].values())}
    repo = body.get("repo")
    actions = repo.get("actions") if isinstance(repo, dict) else None
    for grants in actions.values() if isinstance(actions, dict) else ():
        if isinstance(grants, dict):  # user and group names (no OpenAPI 3.0 keyword constrains a key)
            named = {f"principal-{i}": granted for i, granted in enumerate(grants.values())}
            grants.clear()
            grants.update(named)
    queries = body.get("spec", {}).get("queries") if isinstance(body.get("spec"), dict) else None
    for i, query in enumerate(queries if isinstance(queries, list) else []):
        if isinstance(query, dict) and "query_name" in query:
            query["query_name"] = f"{query['query_name']}-{i}"[-128:]  # unique within the spec


@edge_schema.parametrize()
@SETTINGS
def test_every_edge_operation_answers_as_documented(case: schemathesis.Case, seeded_edge: EdgeProcess) -> None:
    _complete(case, {"sign": api_formats.KEYS.sign, "virtual_repos": True})
    case.call_and_validate(base_url=seeded_edge.url, headers=_admin(seeded_edge), checks=ALL_CHECKS, timeout=30)


@distribution_schema.parametrize()
@SETTINGS
def test_every_distribution_operation_answers_as_documented(
    case: schemathesis.Case, seeded_distribution: DistributionProcess, edge_service: EdgeProcess
) -> None:
    _complete(case, {"edge_url": edge_service.url})
    case.call_and_validate(
        base_url=seeded_distribution.url, headers=_admin(seeded_distribution), checks=ALL_CHECKS, timeout=30
    )
