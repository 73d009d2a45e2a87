"""Artifactory's property API on a real Distribution service and a real edge, used as clients use it:
dohq-artifactory's property calls, and raw HTTP for what it cannot send."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from repository.property_syntax import MAX_PROPERTY_KEY_BYTES
from tests.distribution_process import run_for_test
from tests.test_edge_clients import UPLOADS, artifactory_path, no_proxies  # noqa: F401  (fixture)

TIMEOUT = 30


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DistributionProcess]:
    yield from run_for_test(DistributionProcess(tmp_path / "d"))


def call(
    node: EdgeProcess,
    method: str,
    path: str,
    token: str | None = "admin",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> requests.Response:
    auth = {"Authorization": f"Bearer {node.admin_token if token == 'admin' else token}"} if token else {}
    return requests.request(method, f"{node.url}{path}", headers=auth | (headers or {}), timeout=TIMEOUT, **kw)


def deploy(node: EdgeProcess, repo_path: str, data: bytes = b"data") -> None:
    assert call(node, "PUT", f"/artifactory/{repo_path}", data=data).status_code == 201


def props_of(node: EdgeProcess, repo_path: str) -> dict[str, list[str]]:
    resp = call(node, "GET", f"/artifactory/api/storage/{repo_path}?properties")
    if resp.status_code == 404 and resp.json()["errors"][0]["message"] == "No properties could be found.":
        return {}
    assert resp.status_code == 200, resp.text
    return resp.json()["properties"]  # type: ignore[no-any-return]


def error(resp: requests.Response) -> tuple[int, str]:
    (err,) = resp.json()["errors"]
    assert err["status"] == resp.status_code
    return resp.status_code, err["message"]


def catalog_rows(node: EdgeProcess) -> list[Any]:
    """Every file's row and every indexed property, read from the node's catalog file."""
    with sqlite3.connect(f"file:{node.data_dir / 'catalog.db'}?mode=ro", uri=True) as db:
        files = db.execute("SELECT repo, path, sha256, properties, modified FROM artifacts ORDER BY 1, 2").fetchall()
        indexed = db.execute("SELECT * FROM properties ORDER BY 1, 2, 3, 4").fetchall()
    return [files, indexed]


# -- the service's source repos -----------------------------------------------------------


def test_dohq_artifactory_deploys_with_properties_then_reads_sets_and_deletes_them(
    service: DistributionProcess,
) -> None:
    url = f"{service.url}/artifactory/{SOURCE_REPO}/app/1.0/app.tgz"
    with artifactory_path(url, apikey=service.admin_token) as path:
        path.deploy(io.BytesIO(b"app 1.0"), parameters={"build.number": ["7", "8"], "vcs": "git@host:app é"})
        assert path.properties == {"build.number": ["7", "8"], "vcs": ["git@host:app é"]}
        path.set_properties({"RC1-Approved": "true", "stage": ["qa", "prod"]})
        assert path.properties["RC1-Approved"] == ["true"] and path.properties["stage"] == ["qa", "prod"]
        path.del_properties(["vcs", "stage"])
        assert path.properties == {"build.number": ["7", "8"], "RC1-Approved": ["true"]}
        path.properties = {"only": "this"}
        assert path.properties == {"only": ["this"]}
        # the accessor's PUT ?properties= form, values escaped by the client
        path._accessor.set_properties(path, {"esc": ["x,y", "p|q=r"]}, recursive=False)
        assert path.properties["esc"] == ["x,y", "p|q=r"]
        del path.properties
        assert path.properties == {}


def test_properties_on_a_folder_reach_every_file_below_it(service: DistributionProcess) -> None:
    files = ["app/2.0/a.tgz", "app/2.0/docs/readme.md", "app/2.0/docs/deep/x.txt", "app/2.1/other.tgz"]
    for f in files:
        deploy(service, f"{SOURCE_REPO}/{f}")
    resp = call(service, "PUT", f"/artifactory/api/storage/{SOURCE_REPO}/app/2.0?properties=RC1-Approved=true;tier=1|2")
    assert resp.status_code == 204, resp.text
    for f in files[:3]:
        assert props_of(service, f"{SOURCE_REPO}/{f}") == {"RC1-Approved": ["true"], "tier": ["1", "2"]}
    assert props_of(service, f"{SOURCE_REPO}/app/2.1/other.tgz") == {}
    resp = call(service, "DELETE", f"/artifactory/api/storage/{SOURCE_REPO}/app/2.0/docs?properties=tier")
    assert resp.status_code == 204
    assert props_of(service, f"{SOURCE_REPO}/app/2.0/docs/deep/x.txt") == {"RC1-Approved": ["true"]}
    assert props_of(service, f"{SOURCE_REPO}/app/2.0/a.tgz")["tier"] == ["1", "2"]
    before = catalog_rows(service)
    resp = call(service, "PUT", f"/artifactory/api/storage/{SOURCE_REPO}/app/2.0?properties=x=1&recursive=0")
    assert error(resp) == (400, "Folders hold no properties of their own: use recursive=1 to change their files")
    assert catalog_rows(service) == before


def test_property_search_finds_files_by_key_and_value_in_the_repos_asked(service: DistributionProcess) -> None:
    for build, label in (("1", "false"), ("2", "true"), ("3", "true")):
        deploy(service, f"{SOURCE_REPO}/app/{build}/app.tgz;build={build};RC1-Approved={label}")
    resp = call(service, "GET", f"/artifactory/api/search/prop?RC1-Approved=true&repos={SOURCE_REPO}")
    assert resp.status_code == 200
    uris = [r["uri"].split("/api/storage/")[1] for r in resp.json()["results"]]
    assert uris == [f"{SOURCE_REPO}/app/2/app.tgz", f"{SOURCE_REPO}/app/3/app.tgz"]
    resp = call(service, "GET", "/artifactory/api/search/prop?RC1-Approved=true&build=1,3")
    assert [r["uri"].rsplit("/", 2)[1] for r in resp.json()["results"]] == ["3"]
    resp = call(service, "GET", "/artifactory/api/search/prop?build=2", headers={"X-Result-Detail": "properties"})
    assert resp.json()["results"][0]["properties"] == {"RC1-Approved": ["true"], "build": ["2"]}
    assert call(service, "GET", "/artifactory/api/search/prop?build=1&repos=other").json() == {"results": []}
    assert call(service, "GET", "/artifactory/api/search/prop?build=1", token=None).json() == {"results": []}
    assert call(service, "GET", "/artifactory/api/search/prop?repos=x").json() == {"results": []}
    assert error(call(service, "GET", "/artifactory/api/search/prop?a%01=1"))[0] == 400


BAD_INPUT = [
    ("?properties==1", 400, "Malformed properties: a property key is empty"),
    ("?properties=a", 400, "Malformed property 'a': expected key=value"),
    ("?properties=a=1;;b=2", 400, "Malformed property '': expected key=value"),
    ("?properties=a=%FF", 400, "Malformed properties: percent-encoding is not valid UTF-8"),
    ("?properties=a%01=1", 400, "Malformed properties: key 'a\\x01' contains control characters"),
    ("?properties=a=1%0A", 400, "Malformed properties: a value of 'a' contains control characters"),
    ("?properties=" + "k" * (MAX_PROPERTY_KEY_BYTES + 1) + "=1", 400, f"is longer than {MAX_PROPERTY_KEY_BYTES} bytes"),
    ("?properties=a=1&recursive=yes", 400, "'recursive' must be 0 or 1"),
    ("", 400, "The 'properties' parameter is required, e.g. ?properties=a=1;b=2"),
]


@pytest.mark.parametrize(("query", "status", "message"), BAD_INPUT)
def test_a_bad_property_change_is_refused_and_changes_nothing(
    service: DistributionProcess, query: str, status: int, message: str
) -> None:
    deploy(service, f"{SOURCE_REPO}/app/1/app.tgz;keep=me")
    before = catalog_rows(service)
    resp = call(service, "PUT", f"/artifactory/api/storage/{SOURCE_REPO}/app/1/app.tgz{query}")
    got = error(resp)
    assert got[0] == status and message in got[1]
    assert catalog_rows(service) == before


def test_property_changes_need_annotate_rights_and_an_existing_item(service: DistributionProcess) -> None:
    deploy(service, f"{SOURCE_REPO}/app/1/app.tgz")
    before = catalog_rows(service)
    target = f"/artifactory/api/storage/{SOURCE_REPO}/app/1/app.tgz?properties=a=1"
    assert error(call(service, "PUT", target, token=None))[0] == 401
    made = call(service, "POST", "/access/api/v1/tokens", json={"role": "reader"})
    reader = made.json()["access_token"]
    assert error(call(service, "PUT", target, token=reader)) == (
        403,
        f"User 'reader' is not permitted to annotate '{SOURCE_REPO}/app/1/app.tgz'",
    )
    assert error(call(service, "DELETE", target, token=reader))[0] == 403
    assert catalog_rows(service) == before
    missing = f"/artifactory/api/storage/{SOURCE_REPO}/nothing/here?properties=a=1"
    assert error(call(service, "PUT", missing)) == (404, "Unable to find item")


def test_a_property_key_at_the_length_limit_is_stored_and_one_byte_more_is_refused(
    service: DistributionProcess,
) -> None:
    deploy(service, f"{SOURCE_REPO}/a.bin")
    for length in (1, MAX_PROPERTY_KEY_BYTES - 1, MAX_PROPERTY_KEY_BYTES):
        resp = call(service, "PUT", f"/artifactory/api/storage/{SOURCE_REPO}/a.bin?properties={'k' * length}=v")
        assert resp.status_code == 204
    assert sorted(map(len, props_of(service, f"{SOURCE_REPO}/a.bin"))) == [1, 254, 255]
    too_long = "k" * (MAX_PROPERTY_KEY_BYTES + 1)
    assert call(service, "PUT", f"/artifactory/{SOURCE_REPO}/b.bin;{too_long}=v", data=b"x").status_code == 400
    assert call(service, "GET", f"/artifactory/api/storage/{SOURCE_REPO}/b.bin").status_code == 404


def test_a_semicolon_in_a_deploy_path_starts_matrix_parameters_and_an_encoded_one_is_part_of_the_name(
    service: DistributionProcess,
) -> None:
    deploy(service, f"{SOURCE_REPO}/m/plain.txt;a=1;b=x%3By")
    assert props_of(service, f"{SOURCE_REPO}/m/plain.txt") == {"a": ["1"], "b": ["x;y"]}
    deploy(service, f"{SOURCE_REPO}/m/{quote('odd;name.txt', safe='')}")
    assert call(service, "GET", f"/artifactory/{SOURCE_REPO}/m/odd%3Bname.txt").content == b"data"
    for bad in ("m/x.txt;a", "m/x.txt;=1", "m;a=1/x.txt", "m/%2e%2e/x.txt;a=1", "m/x.txt/;a=1"):
        assert call(service, "PUT", f"/artifactory/{SOURCE_REPO}/{bad}", data=b"x").status_code == 400, bad
    assert call(service, "GET", f"/artifactory/api/storage/{SOURCE_REPO}/m/x.txt").status_code == 404


# -- an edge --------------------------------------------------------------------------------


def test_an_edge_takes_properties_only_in_its_uploads_repo(edge_server: EdgeProcess) -> None:
    url = f"{edge_server.url}/artifactory/{UPLOADS}/ci/report.txt"
    with artifactory_path(url, apikey=edge_server.admin_token) as path:
        path.deploy(io.BytesIO(b"report"), parameters={"job": "42"})
        path.set_properties({"verdict": "pass"})
        assert path.properties == {"job": ["42"], "verdict": ["pass"]}
    for method, where in (
        ("PUT", "/artifactory/api/storage/releases-local/app/a.tgz?properties=a=1"),
        ("DELETE", "/artifactory/api/storage/releases-local/app/a.tgz?properties=a"),
        ("PATCH", "/artifactory/api/metadata/releases-local/app/a.tgz"),
    ):
        resp = call(edge_server, method, where, json={"props": {"a": "1"}})
        assert error(resp) == (403, "Deployment to an Edge Artifactory node is not supported."), (method, where)
    resp = call(edge_server, "GET", f"/artifactory/api/search/prop?verdict=pass&repos={UPLOADS}")
    assert [r["uri"].split("/api/storage/")[1] for r in resp.json()["results"]] == [f"{UPLOADS}/ci/report.txt"]
