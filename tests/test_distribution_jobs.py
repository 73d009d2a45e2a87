"""Edges, distributions and the job runner, over the service's REST API.

The service runs in-process; the edges it pushes to are real: an ``edge serve`` process,
and real HTTP servers on loopback that misbehave on cue (tests/fault_servers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from distribution.app import create_app
from distribution.edges import Edge
from distribution.jobs import COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, NOT_DISTRIBUTED, overall_status
from distribution.rules import parse_rules, select_edges
from distribution.settings import DistributionSettings
from repository.errors import BadRequest, Conflict
from tests.conftest import ADMIN_TOKEN, admin
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, garbage_app, proxy_app
from transfer.sending import BlobSender

V1 = "/distribution/api/v1"
REPO = "releases-local"
EVERYWHERE = [{"site_name": "*", "city_name": "*", "country_codes": ["*"]}]


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist",
        port=0,
        admin_token=ADMIN_TOKEN,
        repos=(REPO,),
        retry_backoff_cap=0.5,
        edge_read_timeout=2.0,
        max_server_errors=5,
    )
    return await aiohttp_client(create_app(settings))


async def flat_error(resp: Any) -> tuple[int, str]:
    body = await resp.json()
    assert set(body) == {"status_code", "message"} and body["status_code"] == resp.status
    return resp.status, body["message"]


def edge_body(name: str = "us-east-1", url: str = "http://127.0.0.1:1", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "url": url, "site_name": "us-east", "city_name": "nyc", "country_code": "US", "token": "t0k"}
    return body | extra


async def register(dist: Any, **fields: Any) -> dict[str, Any]:
    resp = await dist.post(f"{V1}/edges", json=edge_body(**fields), headers=admin())
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def signed_bundle(dist: Any, version: str, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        resp = await dist.put(f"/artifactory/{REPO}/app/{version}/{path}", data=io.BytesIO(data), headers=admin())
        assert resp.status == 201, await resp.text()
    body = {"name": "app", "version": version, "sign_immediately": True}
    body["spec"] = {"queries": [{"pattern": f"{REPO}/app/{version}/*"}]}
    resp = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert resp.status == 201, await resp.text()


async def distribute(dist: Any, version: str, rules: list[dict[str, Any]] = EVERYWHERE) -> int:
    resp = await dist.post(f"{V1}/distribution/app/{version}", json={"distribution_rules": rules}, headers=admin())
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["id"])


async def status_of(dist: Any, version: str, dist_id: int) -> dict[str, Any]:
    resp = await dist.get(f"{V1}/release_bundle/app/{version}/distribution/{dist_id}", headers=admin())
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def wait_for(dist: Any, version: str, dist_id: int, until: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await status_of(dist, version, dist_id)
        if until(status):
            return status
        if time.monotonic() >= deadline:  # a hang guard, not a speed check
            pytest.fail(f"gave up waiting; last status {status}")
        await asyncio.sleep(0.2)


def finished(status: dict[str, Any]) -> bool:
    return status["status"] in (COMPLETED, FAILED)


async def trusted_edge(dist: Any, edge: EdgeProcess, name: str = "us-east-1", url: str | None = None) -> None:
    """Trust the service's key on ``edge`` and register it (or ``url``, a proxy in front of it)."""
    public = await (await dist.get(f"{V1}/keys/gpg/public")).text()
    trust(edge, public)
    await register(dist, name=name, url=url or edge.url, token=distributor_token(edge))


FILES = {"app.tar.gz": b"\x1f\x8b" + b"a" * 300_000, "README.md": b"# app\n", "notes.txt": b"notes\n"}


# ---------------------------------------------------------------- the registry and the rules


async def test_edges_are_registered_once_validated_and_never_show_their_token(dist: Any) -> None:
    bad = [
        edge_body(name="has space"),
        edge_body(url="ftp://edge"),
        edge_body(url="http://"),
        edge_body(country_code="USA"),
        edge_body(token=""),
        edge_body(site_name=""),
        {**edge_body(), "colour": "red"},
        {k: v for k, v in edge_body().items() if k != "token"},
    ]
    for body in bad:
        resp = await dist.post(f"{V1}/edges", json=body, headers=admin())
        assert (await flat_error(resp))[0] == 400, body
    assert await (await dist.get(f"{V1}/edges", headers=admin())).json() == []
    assert (await dist.post(f"{V1}/edges", json=edge_body())).status == 401
    first = await dist.post(f"{V1}/edges", json=edge_body(), headers=admin())
    again = await dist.post(f"{V1}/edges", json=edge_body(), headers=admin())
    assert (first.status, again.status) == (201, 200)
    other = await dist.post(f"{V1}/edges", json=edge_body(city_name="boston"), headers=admin())
    status, message = await flat_error(other)
    assert status == 409 and "us-east-1" in message
    (listed,) = await (await dist.get(f"{V1}/edges", headers=admin())).json()
    assert "token" not in listed and "t0k" not in str(listed)
    assert listed["healthy"] is False and listed["country_code"] == "US"
    assert (await dist.delete(f"{V1}/edges/us-east-1", headers=admin())).status == 204
    assert (await dist.delete(f"{V1}/edges/us-east-1", headers=admin())).status == 404


def test_rules_pick_edges_by_site_city_and_country_wildcards() -> None:
    def edge(name: str, site: str, city: str, country: str) -> Edge:
        return Edge(name, "http://e", site, city, country, "t", "jfrt@" + name, 0)

    edges = [edge("a", "us-east", "nyc", "US"), edge("b", "eu-central", "fra", "DE"), edge("c", "eu-west", "dub", "IE")]

    def names(rules: list[dict[str, Any]]) -> list[str]:
        return [e.name for e in select_edges(parse_rules(rules), edges)]

    assert names(EVERYWHERE) == ["a", "b", "c"]
    assert names([{"site_name": "eu-*"}]) == ["b", "c"]
    assert names([{"country_codes": ["us", "DE"]}]) == ["a", "b"]
    assert names([{"site_name": "eu-*", "city_name": "f?a"}]) == ["b"]
    assert names([{"city_name": "nyc"}, {"country_codes": ["IE"]}]) == ["a", "c"]
    with pytest.raises(Conflict, match="site mars"):  # well formed; nothing registered matches now
        names([{"site_name": "mars"}])
    for bad in (None, [], [{"country_codes": []}], [{"site_name": 3}], [{"planet": "x"}], ["*"]):
        with pytest.raises(BadRequest):
            parse_rules(bad)


async def test_large_blobs_never_take_every_upload_slot_while_small_ones_wait() -> None:
    """Half the slots send the largest blobs first, the others the smallest, in batches; nothing is sent twice."""
    small_size = 700_000  # three of them overflow a batch
    sizes = {f"{i:064x}": size for i, size in enumerate([10**9] * 4 + [small_size] * 20)}
    small = {s for s, size in sizes.items() if size == small_size}
    running: set[str] = set()
    started_before_all_large: set[str] = set()
    sent: list[tuple[str, ...]] = []

    class Recording(BlobSender):
        async def send_blob(self, tx: str, sha: str, size: int) -> None:
            await self.send_batch(tx, (sha,), sizes)

        async def send_batch(self, tx: str, shas: tuple[str, ...], sizes: dict[str, int]) -> None:
            running.update(shas)
            if sum(sizes[s] > small_size for s in running) < 4:
                started_before_all_large.update(shas)
            await asyncio.sleep(0.05 if sizes[shas[0]] > small_size else 0.001)
            running.difference_update(shas)
            sent.append(shas)

    sender = Recording(None, None, 4, lambda n: None)  # type: ignore[arg-type]
    await sender.upload_all("tx", sorted(sizes, key=lambda s: (-sizes[s], s)), sizes)  # largest first
    assert sorted(s for unit in sent for s in unit) == sorted(sizes)
    assert [len(unit) for unit in sent].count(2) == 10, "small blobs go two to a batch, large ones alone"
    assert sizes[sent[0][0]] == small_size
    assert small <= started_before_all_large, "every small blob starts before large ones fill every slot"


def test_the_status_vocabulary_is_jfrogs_and_any_failure_fails_the_whole() -> None:
    assert overall_status([]) == NOT_DISTRIBUTED
    assert overall_status([IN_QUEUE, IN_QUEUE]) == IN_QUEUE
    assert overall_status([COMPLETED, IN_QUEUE]) == IN_PROGRESS
    assert overall_status([COMPLETED, IN_PROGRESS, FAILED]) == FAILED
    assert overall_status([COMPLETED, COMPLETED]) == COMPLETED


async def test_only_a_signed_bundle_goes_to_matching_edges_and_bad_requests_store_nothing(dist: Any) -> None:
    await register(dist)
    url = f"{V1}/distribution/app/1.0"
    assert (await flat_error(await dist.post(url, json={"distribution_rules": EVERYWHERE}, headers=admin())))[0] == 404
    await dist.put(f"/artifactory/{REPO}/app/1.0/a.bin", data=b"a", headers=admin())
    spec = {"queries": [{"pattern": f"{REPO}/app/1.0/*"}]}
    await dist.post(f"{V1}/release_bundle", json={"name": "app", "version": "1.0", "spec": spec}, headers=admin())
    status, message = await flat_error(await dist.post(url, json={"distribution_rules": EVERYWHERE}, headers=admin()))
    assert status == 409 and "not signed" in message
    await dist.post(f"{V1}/release_bundle/app/1.0/sign", json={}, headers=admin())
    for body in ({}, {"distribution_rules": []}, {"distribution_rules": EVERYWHERE, "dry_run": "yes"}, {"x": 1}):
        assert (await flat_error(await dist.post(url, json=body, headers=admin())))[0] == 400, body
    status, message = await flat_error(
        await dist.post(url, json={"distribution_rules": [{"country_codes": ["JP"]}]}, headers=admin())
    )
    assert status == 409 and "JP" in message and "us-east-1" in message
    dry = await dist.post(url, json={"distribution_rules": EVERYWHERE, "dry_run": True}, headers=admin())
    assert dry.status == 200
    assert [s["name"] for s in (await dry.json())["sites"]] == ["us-east-1"]
    history = await dist.get(f"{V1}/release_bundle/app/1.0/distribution", headers=admin())
    assert await history.json() == []
    assert (await dist.put(f"{V1}/distribution/app/1.0/abort", headers=admin())).status == 204


# ---------------------------------------------------------------- the runner against real peers


async def test_an_attempt_has_one_request_id_on_every_call_the_edge_logs(dist: Any, edge_server: EdgeProcess) -> None:
    await trusted_edge(dist, edge_server)
    await signed_bundle(dist, "1.0", FILES)
    dist_id = await distribute(dist, "1.0")
    assert (await wait_for(dist, "1.0", dist_id, finished))["status"] == COMPLETED
    calls: list[dict[str, Any]] = []
    transactions = "/artifactory/api/distribution/transactions"
    deadline = time.monotonic() + 10  # the edge writes access lines in batches, up to LINES_DELAY after the answer
    while time.monotonic() < deadline:
        calls = [
            json.loads(line)
            for line in edge_server.log_tail(400).splitlines()
            if line.startswith("{") and transactions in line and '"aiohttp.access"' in line
        ]
        if any(c["path"].endswith("/commit") for c in calls):
            break
        await asyncio.sleep(0.05)
    assert {c["path"].rsplit("/", 1)[-1] for c in calls} >= {"transactions", "blobs", "commit"}
    assert {c["request_id"] for c in calls} == {f"dist-{dist_id}-us-east-1-0"}, "one attempt, one id, on every call"


async def sbom_size(dist: Any, version: str) -> int:
    """The size of the SBOM the bundle's signed manifest names: one more blob a distribution sends."""
    manifest = await (await dist.get(f"{V1}/release_bundle/app/{version}/manifest", headers=admin())).read()
    return int(json.loads(manifest)["sbom"]["size"])


async def test_a_bundle_reaches_a_real_edge_verified_and_a_new_version_sends_only_what_changed(
    dist: Any, edge_server: EdgeProcess
) -> None:
    await trusted_edge(dist, edge_server)
    await signed_bundle(dist, "1.0", FILES)
    done = await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    assert done["status"] == COMPLETED, done
    (site,) = done["sites"]
    assert site["target_artifactory"]["name"] == "us-east-1" and site["general_error"] == ""
    total = sum(len(v) for v in FILES.values())
    assert (site["total_files"], site["distributed_files"], site["distributed_bytes"]) == (3, 3, total)
    assert site["sent_bytes"] == total + await sbom_size(dist, "1.0")  # the files, and the bundle's SBOM
    for path, data in FILES.items():
        assert download(edge_server.url, f"{REPO}/app/1.0/{path}") == (200, data)
    changed = {**FILES, "notes.txt": b"new notes for 1.1\n"}
    await signed_bundle(dist, "1.1", changed)
    done = await wait_for(dist, "1.1", await distribute(dist, "1.1"), finished)
    (site,) = done["sites"]
    assert done["status"] == COMPLETED and site["distributed_bytes"] == sum(len(v) for v in changed.values())
    assert (site["sent_files"], site["sent_bytes"]) == (1, len(changed["notes.txt"]) + await sbom_size(dist, "1.1"))
    history = await (await dist.get(f"{V1}/release_bundle/app/1.1/distribution", headers=admin())).json()
    assert [d["distribution_id"] for d in history] == [done["distribution_id"]]
    assert set(done) == {
        "distribution_id", "distribution_friendly_id", "type", "release_bundle_name", "release_bundle_version",
        "status", "start_time", "finish_time", "distribution_rules", "sites",
    }  # fmt: skip


async def distributed_through(dist: Any, edge: EdgeProcess, faults: Faults, files: dict[str, bytes]) -> dict[str, Any]:
    """Version 1.0 of ``files`` distributed to ``edge`` behind a proxy that misbehaves as ``faults`` say."""
    proxy = ThreadedServer(proxy_app(edge.url, faults)).start()
    try:
        await trusted_edge(dist, edge, url=proxy.url)
        await signed_bundle(dist, "1.0", files)
        return await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    finally:
        proxy.stop()


async def test_an_edge_answering_500_is_retried_until_it_succeeds(dist: Any, edge_server: EdgeProcess) -> None:
    faults = Faults(server_errors=3, only="/transactions")
    done = await distributed_through(dist, edge_server, faults, FILES)
    assert done["status"] == COMPLETED, done
    assert [s for _, _, s in faults.seen[:3]] == [500, 500, 500]


LARGE = {"app.tar.gz": os.urandom(9 * 1024 * 1024 + 4321), "README.md": b"# app\n"}


async def test_a_large_blob_goes_out_whole_with_sendfile_through_a_proxy_that_fails_at_first(
    dist: Any, edge_server: EdgeProcess
) -> None:
    """Blobs over a megabyte leave the service's local store with sendfile; a 500 mid-way is retried."""
    faults = Faults(server_errors=2, only="/blobs/")
    done = await distributed_through(dist, edge_server, faults, LARGE)
    assert done["status"] == COMPLETED, done
    large = hashlib.sha256(LARGE["app.tar.gz"]).hexdigest()
    assert [st for m, path, st in faults.seen if m == "PUT" and path.endswith(large)][-1] == 201
    (site,) = done["sites"]
    assert site["distributed_bytes"] == sum(len(v) for v in LARGE.values())
    for path, data in LARGE.items():
        assert download(edge_server.url, f"{REPO}/app/1.0/{path}") == (200, data)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
@pytest.mark.parametrize("name", ["app.tar.gz", "README.md"], ids=["large-blob", "small-blob-in-a-batch"])
async def test_a_blob_damaged_in_the_services_own_store_fails_the_job_by_name_and_the_edge_shows_nothing(
    dist: Any, edge_server: EdgeProcess, tmp_path: Path, damage: str, name: str
) -> None:
    await trusted_edge(dist, edge_server)
    await signed_bundle(dist, "1.0", LARGE)
    sha = hashlib.sha256(LARGE[name]).hexdigest()
    (stored,) = (tmp_path / "dist").rglob(sha)
    if damage == "truncated":
        with open(stored, "r+b") as f:
            f.truncate(len(LARGE[name]) // 2)
    else:
        stored.unlink()
    done = await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    (site,) = done["sites"]
    assert done["status"] == FAILED, done
    error = site["general_error"]
    assert sha in error and "service's storage" in error and ("missing" if damage == "deleted" else "damaged") in error
    assert download(edge_server.url, f"{REPO}/app/1.0/README.md")[0] == 404, "nothing of the bundle is visible"


async def test_an_edge_answering_garbage_fails_quoting_it_while_a_real_edge_completes(
    dist: Any, edge_server: EdgeProcess
) -> None:
    garbage = ThreadedServer(garbage_app).start()
    try:
        await trusted_edge(dist, edge_server)
        await register(dist, name="junk", url=garbage.url)
        await signed_bundle(dist, "1.0", FILES)
        done = await wait_for(
            dist,
            "1.0",
            await distribute(dist, "1.0"),
            lambda s: all(x["status"] in (COMPLETED, FAILED) for x in s["sites"]),
        )
    finally:
        garbage.stop()
    assert done["status"] == FAILED
    sites = {s["target_artifactory"]["name"]: s for s in done["sites"]}
    assert sites["us-east-1"]["status"] == COMPLETED
    assert sites["junk"]["status"] == FAILED and "not JSON" in sites["junk"]["general_error"]
    assert "junk" in sites["junk"]["general_error"]


async def test_an_untrusted_signature_fails_with_the_edges_own_words(dist: Any, edge_server: EdgeProcess) -> None:
    await register(dist, url=edge_server.url, token=distributor_token(edge_server))
    await signed_bundle(dist, "1.0", FILES)
    done = await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    (site,) = done["sites"]
    assert done["status"] == FAILED and "422" in site["general_error"], site


async def test_a_hanging_edge_stays_in_progress_until_aborted(dist: Any, edge_server: EdgeProcess) -> None:
    faults = Faults(hang=True, only="/blobs")
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        await trusted_edge(dist, edge_server, url=proxy.url)
        await signed_bundle(dist, "1.0", FILES)
        dist_id = await distribute(dist, "1.0")
        waiting = await wait_for(dist, "1.0", dist_id, lambda s: "retrying" in s["sites"][0]["general_error"])
        assert waiting["status"] == IN_PROGRESS
        abort = await dist.put(f"{V1}/distribution/app/1.0/abort", headers=admin())
        assert abort.status == 202 and [s["name"] for s in (await abort.json())["sites"]] == ["us-east-1"]
        done = await status_of(dist, "1.0", dist_id)
        assert done["status"] == FAILED and done["sites"][0]["general_error"] == "aborted"
        assert (await dist.put(f"{V1}/distribution/app/1.0/abort", headers=admin())).status == 204
        await asyncio.sleep(1)
        assert (await status_of(dist, "1.0", dist_id))["sites"][0]["general_error"] == "aborted"
    finally:
        proxy.stop()


async def test_a_bundle_removed_from_edges_with_on_success_delete_is_gone_everywhere(
    dist: Any, edge_server: EdgeProcess
) -> None:
    await trusted_edge(dist, edge_server)
    await signed_bundle(dist, "1.0", FILES)
    assert (await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished))["status"] == COMPLETED
    body = {"distribution_rules": EVERYWHERE, "on_success": "delete"}
    resp = await dist.post(f"{V1}/distribution/app/1.0/delete", json=body, headers=admin())
    assert resp.status == 202
    deadline = time.monotonic() + 30
    while (await dist.get(f"{V1}/release_bundle/app/1.0/distribution", headers=admin())).status != 404:
        if time.monotonic() >= deadline:  # a hang guard, not a speed check
            pytest.fail("gave up waiting")
        await asyncio.sleep(0.2)
    assert download(edge_server.url, f"{REPO}/app/1.0/README.md")[0] == 404
    assert (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).status == 404


async def test_keys_propagate_to_every_edge_and_a_failing_edge_is_partial(dist: Any, edge_server: EdgeProcess) -> None:
    garbage = ThreadedServer(garbage_app).start()
    try:
        resp = await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())
        assert (await flat_error(resp))[0] == 409  # no edge registered yet
        await register(dist, url=edge_server.url, token=edge_server.admin_token)
        answer = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
        assert answer["status"] == "SUCCESS", answer
        (detail,) = answer["details"]
        assert detail["name"] == "us-east-1" and detail["key_alias"].startswith("distribution-")
        _, keys = http("GET", edge_server.url + "/artifactory/api/security/keys/trusted", edge_server.admin_token)
        assert [k["alias"] for k in keys["keys"]] == [detail["key_alias"]]
        await register(dist, name="junk", url=garbage.url)
        again = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
        assert again["status"] == "PARTIAL_SUCCESS"
    finally:
        garbage.stop()


async def test_an_uploaded_key_with_propagate_to_edge_nodes_reaches_edges_and_a_distributor_token_fails_by_name(
    dist: Any, edge_server: EdgeProcess, keys: Any
) -> None:
    trusted_keys = edge_server.url + "/artifactory/api/security/keys/trusted"
    await register(dist, url=edge_server.url, token=edge_server.admin_token)
    await register(dist, name="dist-only", url=edge_server.url, token=distributor_token(edge_server))
    upload = {"alias": "release-2026", "key": {"private_key": keys.alice.private}, "propagate_to_edge_nodes": True}
    resp = await dist.post(f"{V1}/keys/gpg", json=upload, headers=admin())
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "PARTIAL_SUCCESS" and answer["key"]["fingerprint"] == keys.alice.fingerprint
    alias = "distribution-" + keys.alice.fingerprint[:16].lower()
    by_edge = {d["name"]: d for d in answer["details"]}
    assert {n: (d["key_alias"], d["status"]) for n, d in by_edge.items()} == {
        "us-east-1": (alias, "SUCCESS"),
        "dist-only": (alias, "FAILURE"),
    }
    # an edge changes its circle of trust only for an admin token, and the answer says so
    assert "403" in by_edge["dist-only"]["message"] and "admin token" in by_edge["dist-only"]["message"]
    _, listed = http("GET", trusted_keys, edge_server.admin_token)
    assert [(k["alias"], k["fingerprint"]) for k in listed["keys"]] == [(alias, keys.alice.fingerprint)]
    # keys/gpg/propagate answers the same way for every key; only distributor tokens: FAILURE
    remove = await dist.delete(f"{V1}/edges/us-east-1", headers=admin())
    assert remove.status == 204
    failed = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
    assert failed["status"] == "FAILURE" and {d["name"] for d in failed["details"]} == {"dist-only"}
    assert all("admin token" in d["message"] for d in failed["details"])
    # without the flag, or with no edges registered, nothing is pushed
    quiet = {"alias": "other", "key": {"private_key": keys.bob.private}}
    answer = await (await dist.post(f"{V1}/keys/gpg", json=quiet, headers=admin())).json()
    assert (answer["status"], answer["details"]) == ("SUCCESS", [])
    assert len(http("GET", trusted_keys, edge_server.admin_token)[1]["keys"]) == 1
    bad = await dist.post(
        f"{V1}/keys/gpg", json={**quiet, "alias": "x", "propagate_to_edge_nodes": "yes"}, headers=admin()
    )
    assert (await flat_error(bad))[0] == 400
