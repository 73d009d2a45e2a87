"""Virtual repositories on a real edge process: one name over two bundles' repos and the uploads
repo, resolved in member order, as clients see them over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from repository.errors import EDGE_READ_ONLY_MESSAGE
from repository.virtual import MAX_MEMBERS
from tests.access_http import TX, Answer, call, push_bundle
from tests.gpg_keys import KeyFactory, KeySet
from wire.manifest import Manifest, ManifestArtifact, encode

UPLOADS = "artifactory-edge-uploads"
REPOS = "/artifactory/api/repositories"
USERS = "/artifactory/api/security/users"
TARGETS = "/artifactory/api/v2/security/permissions"
AUDIT = "/artifactory/api/audit"
SIGN = "/artifactory/api/signed/url"
BIG = bytes(range(256)) * 1024  # 256 KiB: above the size served from memory, so sent by sendfile
A_FILES = {
    "team-a-local/common/readme.txt": b"readme from team a",
    "team-a-local/a-only/big.bin": BIG,
    "team-a-local/shared/dir/one.txt": b"one",
}
B_FILES = {
    "team-b-local/common/readme.txt": b"readme from team b, longer",
    "team-b-local/b-only/y.txt": b"only b has this",
    "team-b-local/shared/dir/two.txt": b"two",
}
MEMBERS = ["team-a-local", "team-b-local", UPLOADS]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Edge:
    """The module's edge process and how the tests call it."""

    def __init__(self, process: EdgeProcess) -> None:
        self.process = process

    def call(self, method: str, path: str, body: Any = None, token: str | None = "admin", **kw: Any) -> Answer:
        token = self.process.admin_token if token == "admin" else token
        return call(self.process.url + path, method, body=body, token=token, **kw)

    def config(self, key: str) -> Any:
        return self.call("GET", f"{REPOS}/{key}").json()

    def repos(self) -> Any:
        return self.call("GET", REPOS).json()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, key_factory: KeyFactory, keys: KeySet) -> Iterator[Edge]:
    """Bundles in team-a-local and team-b-local (both hold common/readme.txt), a file in the
    uploads repo, and the virtual repo ``all`` over the three, in that order."""
    process = EdgeProcess(tmp_path_factory.mktemp("virtual") / "edge", env={"EDGE_AUDIT_FLUSH_INTERVAL": "0.05"})
    process.start()
    try:
        push_bundle(process, key_factory, keys.alice, "team-a", "1.0", A_FILES)
        push_bundle(process, key_factory, keys.alice, "team-b", "1.0", B_FILES)
        edge = Edge(process)
        assert edge.call("PUT", f"/artifactory/{UPLOADS}/common/upload.txt", body=b"uploaded").status == 201
        made = edge.call("PUT", f"{REPOS}/all", {"rclass": "virtual", "repositories": MEMBERS})
        assert made.status == 201, made.body
        yield edge
    finally:
        code = process.stop()
        print(f"edge log, last lines:\n{process.log_tail()}")
    assert code == 0


def test_a_path_in_several_members_is_served_from_the_first_with_its_checksums(edge: Edge) -> None:
    first = edge.call("GET", "/artifactory/all/common/readme.txt")
    assert first.status == 200 and first.body == A_FILES["team-a-local/common/readme.txt"]
    assert first.headers["X-Checksum-Sha256"] == sha256(first.body)
    assert first.headers["ETag"] == f'"{sha256(first.body)}"'
    assert first.headers["X-Artifactory-Id"]
    assert edge.call("GET", "/artifactory/all/b-only/y.txt").body == B_FILES["team-b-local/b-only/y.txt"]
    assert edge.call("GET", "/artifactory/all/common/upload.txt").body == b"uploaded"
    missing = edge.call("GET", "/artifactory/all/common/none.txt")
    assert missing.status == 404 and missing.error == "Unable to find item"


def test_ranges_heads_and_conditions_through_a_virtual_repo_answer_as_the_member_does(edge: Edge) -> None:
    part = edge.call("GET", "/artifactory/all/a-only/big.bin", headers={"Range": "bytes=1000-200999"})
    assert part.status == 206 and part.body == BIG[1000:201000]
    assert part.headers["Content-Range"] == f"bytes 1000-200999/{len(BIG)}"
    assert part.headers["X-Checksum-Sha256"] == sha256(BIG)
    head = edge.call("HEAD", "/artifactory/all/a-only/big.bin")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(BIG)) and head.body == b""
    whole = edge.call("GET", "/artifactory/all/a-only/big.bin")
    assert sha256(whole.body) == sha256(BIG)
    unchanged = edge.call("GET", "/artifactory/all/a-only/big.bin", headers={"If-None-Match": f'"{sha256(BIG)}"'})
    assert unchanged.status == 304
    beyond = edge.call("GET", "/artifactory/all/a-only/big.bin", headers={"Range": f"bytes={len(BIG)}-"})
    assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(BIG)}"


def test_storage_api_names_the_virtual_repo_and_merges_listings(edge: Edge) -> None:
    info = edge.call("GET", "/artifactory/api/storage/all/common/readme.txt").json()
    assert info["repo"] == "all" and info["path"] == "/common/readme.txt"
    assert info["checksums"]["sha256"] == sha256(A_FILES["team-a-local/common/readme.txt"])
    assert info["downloadUri"].endswith("/artifactory/all/common/readme.txt")
    root = edge.call("GET", "/artifactory/api/storage/all").json()
    assert root["repo"] == "all" and "size" not in root
    assert sorted(c["uri"] for c in root["children"]) == ["/a-only", "/b-only", "/common", "/shared"]
    shared = edge.call("GET", "/artifactory/api/storage/all/shared/dir").json()
    assert [c["uri"] for c in shared["children"]] == ["/one.txt", "/two.txt"]
    deep = edge.call("GET", "/artifactory/api/storage/all?list&deep=1").json()
    files = {f["uri"]: f["sha2"] for f in deep["files"]}
    assert files == {
        "/a-only/big.bin": sha256(BIG),
        "/b-only/y.txt": sha256(B_FILES["team-b-local/b-only/y.txt"]),
        "/common/readme.txt": sha256(A_FILES["team-a-local/common/readme.txt"]),
        "/common/upload.txt": sha256(b"uploaded"),
        "/shared/dir/one.txt": sha256(b"one"),
        "/shared/dir/two.txt": sha256(b"two"),
    }
    assert [f["uri"] for f in deep["files"]] == sorted(files)
    flat = edge.call("GET", "/artifactory/api/storage/all/common?list&listFolders=1").json()
    assert [f["uri"] for f in flat["files"]] == ["/readme.txt", "/upload.txt"]


def test_the_repository_list_and_config_show_a_virtual_repo(edge: Edge) -> None:
    listed = {r["key"]: r for r in edge.repos()}
    assert listed["all"]["type"] == "VIRTUAL" and listed["all"]["url"].endswith("/artifactory/all")
    assert listed["team-a-local"]["type"] == "LOCAL"
    config = edge.config("all")
    assert config["rclass"] == "virtual" and config["repositories"] == MEMBERS and config["packageType"] == "generic"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST"])
def test_deploys_and_deletes_in_a_virtual_repo_are_refused_and_store_nothing(edge: Edge, method: str) -> None:
    before = edge.call("GET", "/artifactory/api/storage/all?list&deep=1").json()["files"]
    refused = edge.call(method, "/artifactory/all/common/readme.txt", body=b"new bytes")
    assert refused.status == 403 and refused.error == EDGE_READ_ONLY_MESSAGE
    refused = edge.call(method, "/artifactory/all/new/file.txt", body=b"new bytes")
    assert refused.status == 403
    assert edge.call("GET", "/artifactory/api/storage/all?list&deep=1").json()["files"] == before
    assert edge.call("GET", "/artifactory/all/common/readme.txt").body == A_FILES["team-a-local/common/readme.txt"]


def test_a_member_the_caller_may_not_read_is_skipped_and_the_audit_names_the_member(edge: Edge) -> None:
    user = {"email": "carol@example.com", "password": "carol-password-333"}
    assert edge.call("PUT", f"{USERS}/carol", user).status in (200, 201)
    target = {"name": "a-is-closed", "repo": {"repositories": ["team-a-local"], "actions": {"users": {}}}}
    assert edge.call("PUT", f"{TARGETS}/a-is-closed", target).status in (200, 201)
    basic = base64.b64encode(b"carol:carol-password-333").decode()
    carol = {"headers": {"Authorization": f"Basic {basic}"}, "token": None}
    try:
        seen = edge.call("GET", "/artifactory/all/common/readme.txt", **carol)
        assert seen.status == 200 and seen.body == B_FILES["team-b-local/common/readme.txt"]
        hidden = edge.call("GET", "/artifactory/all/a-only/big.bin", **carol)
        assert hidden.status == 404 and hidden.error == "Unable to find item"
        deep = edge.call("GET", "/artifactory/api/storage/all?list&deep=1", **carol).json()
        assert "/a-only/big.bin" not in {f["uri"] for f in deep["files"]}
        info = edge.call("GET", "/artifactory/api/storage/all/common/readme.txt", **carol).json()
        assert info["checksums"]["sha256"] == sha256(B_FILES["team-b-local/common/readme.txt"])
        assert edge.call("GET", "/artifactory/all/common/readme.txt", token=None).status == 401
        records = _audited(edge, "carol")
        assert {(r["repo"], r["path"], r["servedFrom"], r["status"]) for r in records} >= {
            ("all", "common/readme.txt", "team-b-local", 200),
            ("all", "a-only/big.bin", None, 404),
        }
    finally:
        edge.call("DELETE", f"{TARGETS}/a-is-closed")


def test_a_member_whose_ip_rules_refuse_the_client_is_skipped(edge: Edge) -> None:
    rules = "/artifactory/api/access/rules"
    refused = {"rules": [{"repos": ["team-a-local"], "deny_cidrs": ["127.0.0.2/32"]}]}
    assert edge.call("PUT", rules, refused).status == 200
    try:
        direct = edge.call("GET", "/artifactory/team-a-local/common/readme.txt", source="127.0.0.2")
        assert direct.status == 403
        through = edge.call("GET", "/artifactory/all/common/readme.txt", source="127.0.0.2")
        assert through.status == 200 and through.body == B_FILES["team-b-local/common/readme.txt"]
        assert edge.call("GET", "/artifactory/all/a-only/big.bin", source="127.0.0.2").status == 404
        admitted = edge.call("GET", "/artifactory/all/common/readme.txt", source="127.0.0.1")
        assert admitted.body == A_FILES["team-a-local/common/readme.txt"]
    finally:
        assert edge.call("DELETE", rules).status in (200, 204)


def _audited(edge: Edge, subject: str) -> list[dict[str, Any]]:
    """The downloads recorded for ``subject`` once the trail has written them (within a bound)."""
    for _ in range(200):
        records = edge.call("GET", f"{AUDIT}?repo=all&subject={subject}&action=download").json()["records"]
        if len(records) >= 2:
            return list(records)
        time.sleep(0.05)
    pytest.fail("the downloads were never recorded")


def test_a_signed_url_for_a_virtual_path_serves_that_file_to_anyone_holding_it(edge: Edge) -> None:
    assert edge.call("GET", "/artifactory/all/shared/dir/two.txt", token=None).status == 401
    url = edge.call("POST", SIGN, {"repo_path": "/all/shared/dir/two.txt", "valid_for_secs": 600}).body.decode()
    assert call(url).body == b"two"
    other = url.replace("shared/dir/two.txt", "shared/dir/one.txt")
    assert call(other).status == 403


def test_configuration_errors_answer_400_and_change_nothing(edge: Edge) -> None:
    assert edge.call("PUT", f"{REPOS}/inner", {"rclass": "virtual", "repositories": ["all"]}).status == 201
    before = (edge.repos(), edge.config("all"), edge.config("inner"))
    bad = [
        ("POST", "all", {"repositories": ["nowhere"]}, "does not exist"),
        ("POST", "all", {"repositories": ["team-a-local", "team-a-local"]}, "listed twice"),
        ("POST", "all", {"repositories": ["inner"]}, "cycle"),
        ("POST", "all", {"repositories": ["all"]}, "cannot include itself"),
        ("POST", "all", {"repositories": "team-a-local"}, "must be a list"),
        ("POST", "all", {"repositories": ["team-a-local"], "notes": "x"}, "Unknown field 'notes'"),
        ("POST", "all", {"rclass": "local"}, "'rclass' must be 'virtual'"),
        ("PUT", "new-virtual", {"rclass": "virtual", "repositories": ["bad key"]}, "Invalid repository key"),
        ("PUT", "new-virtual", {"rclass": "virtual", "repositories": [UPLOADS] * 2}, "listed twice"),
        ("PUT", "bad%20key", {"rclass": "virtual", "repositories": []}, "Invalid repository key"),
    ]
    for method, key, body, message in bad:
        answer = edge.call(method, f"{REPOS}/{key}", body)
        assert answer.status == 400 and message in answer.error, (key, body, answer.body)
    taken = edge.call("PUT", f"{REPOS}/team-a-local", {"rclass": "virtual", "repositories": []})
    assert taken.status == 409 and "local repository" in taken.error
    local = edge.call("POST", f"{REPOS}/team-a-local", {"repositories": [UPLOADS]})
    assert local.status == 409 and "local repository" in local.error
    other = edge.call("PUT", f"{REPOS}/all", {"rclass": "virtual", "repositories": [UPLOADS]})
    assert other.status == 409 and edge.config("all")["repositories"] == MEMBERS
    assert (edge.repos(), edge.config("all"), edge.config("inner")) == before
    assert edge.call("PUT", f"{REPOS}/all", {"rclass": "virtual", "repositories": MEMBERS}).status == 200
    listed = edge.call("DELETE", f"{REPOS}/all")
    assert listed.status == 409 and "'inner'" in listed.error
    assert edge.call("DELETE", f"{REPOS}/inner").status == 200
    assert edge.call("GET", f"{REPOS}/inner").status == 404
    assert edge.call("PUT", f"{REPOS}/x", {"rclass": "virtual"}, token=None).status == 401


@pytest.mark.parametrize("count", [0, 1, MAX_MEMBERS - 1, MAX_MEMBERS, MAX_MEMBERS + 1])
def test_a_virtual_repo_lists_at_most_the_limit_of_members(edge: Edge, count: int) -> None:
    keys = [f"limit-{n}-local" for n in range(count)]
    for key in keys:
        assert edge.call("PUT", f"{REPOS}/{key}", {"rclass": "local"}).status == 200
    answer = edge.call("PUT", f"{REPOS}/limit-{count}", {"rclass": "virtual", "repositories": keys})
    if count > MAX_MEMBERS:
        assert answer.status == 400 and f"at most {MAX_MEMBERS}" in answer.error
        assert edge.call("GET", f"{REPOS}/limit-{count}").status == 404
    else:
        assert answer.status == 201 and edge.config(f"limit-{count}")["repositories"] == keys
        assert edge.call("GET", f"/artifactory/limit-{count}/common/readme.txt").status == 404
        assert edge.call("DELETE", f"{REPOS}/limit-{count}").status == 200


def test_removing_a_virtual_repo_keeps_its_members_content(edge: Edge) -> None:
    assert edge.call("PUT", f"{REPOS}/short-lived", {"rclass": "virtual", "repositories": MEMBERS[:1]}).status == 201
    assert edge.call("GET", "/artifactory/short-lived/common/readme.txt").status == 200
    gone = edge.call("DELETE", f"{REPOS}/short-lived")
    assert gone.status == 200
    assert edge.call("GET", "/artifactory/short-lived/common/readme.txt").status == 404
    assert "short-lived" not in {r["key"] for r in edge.repos()}
    kept = edge.call("GET", "/artifactory/team-a-local/common/readme.txt")
    assert kept.body == A_FILES["team-a-local/common/readme.txt"]
    assert edge.call("DELETE", f"{REPOS}/short-lived").status == 404
    local = edge.call("DELETE", f"{REPOS}/team-a-local")
    assert local.status == 409 and "local repository" in local.error
    assert edge.call("GET", "/artifactory/team-a-local/common/readme.txt").status == 200


def test_members_change_with_post_and_resolution_follows(edge: Edge) -> None:
    assert edge.call("PUT", f"{REPOS}/swap", {"rclass": "virtual", "repositories": MEMBERS[:2]}).status == 201
    assert edge.call("GET", "/artifactory/swap/common/readme.txt").body == A_FILES["team-a-local/common/readme.txt"]
    changed = edge.call("POST", f"{REPOS}/swap", {"repositories": ["team-b-local", "team-a-local"]})
    assert changed.status == 200 and json.loads(changed.body)["repositories"] == ["team-b-local", "team-a-local"]
    assert edge.call("GET", "/artifactory/swap/common/readme.txt").body == B_FILES["team-b-local/common/readme.txt"]
    assert edge.call("POST", f"{REPOS}/swap", {"repositories": []}).status == 200
    assert edge.call("GET", "/artifactory/swap/common/readme.txt").status == 404
    assert edge.call("DELETE", f"{REPOS}/swap").status == 200


def test_a_change_of_members_is_seen_by_every_worker(tmp_path: Path) -> None:
    from tests.test_edge_workers import WORKER

    with EdgeProcess(tmp_path / "edge", workers=2) as process:
        edge = Edge(process)
        assert edge.call("PUT", f"/artifactory/{UPLOADS}/w.txt", body=b"worker bytes").status == 201
        assert edge.call("PUT", f"{REPOS}/empty-local", {"rclass": "local"}).status == 200
        assert edge.call("PUT", f"{REPOS}/v", {"rclass": "virtual", "repositories": [UPLOADS]}).status == 201
        assert _every_worker(edge, WORKER) == {200}
        assert edge.call("POST", f"{REPOS}/v", {"repositories": ["empty-local"]}).status == 200
        assert _every_worker(edge, WORKER) == {404}


def _every_worker(edge: Edge, header: str) -> set[int]:
    """The statuses of GET v/w.txt on new connections until each worker has answered."""
    statuses: dict[str, int] = {}
    for _ in range(500):
        answer = edge.call("GET", "/artifactory/v/w.txt")
        statuses[answer.headers[header]] = answer.status
        if len(statuses) == edge.process.workers:
            return set(statuses.values())
    pytest.fail(f"only workers {sorted(statuses)} answered")


def test_a_bundle_with_files_under_a_virtual_repos_key_is_refused_at_start(
    edge: Edge, key_factory: KeyFactory, keys: KeySet
) -> None:
    data = b"would be hidden behind the virtual repo"
    artifact = ManifestArtifact(
        target="all/hidden.txt", source="src-local/hidden.txt", size=len(data), sha256=sha256(data),
        sha1=hashlib.sha1(data).hexdigest(), md5=hashlib.md5(data).hexdigest(),
    )  # fmt: skip
    manifest = encode(Manifest.create("hidden", "1.0", [artifact], created_by="release-manager"))
    signature = key_factory.sign(keys.alice, manifest).decode()
    started = edge.call("POST", TX, {"manifest": manifest.decode(), "signature": signature})
    assert started.status == 422 and "virtual repository" in started.error and "all/hidden.txt" in started.error
    assert edge.call("GET", "/artifactory/all/hidden.txt").status == 404
    assert edge.call("GET", "/artifactory/api/storage/all/hidden.txt").status == 404
